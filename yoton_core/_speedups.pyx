# cython: language_level=3, boundscheck=False, wraparound=False
"""The optional compiled accelerator: the two byte-level steps of a 100-byte message.

Built only on request (``python3 dev.py accel``, or ``YOTON_ACCELERATE=1`` with
``pip install --no-build-isolation``; README "Fast build"). ``_frames.py`` and
``_decoder.py`` import it when present and fall back to pure Python otherwise;
the two are tested against each other (tests/test_frames.py). Only work on
bytes is here: code that reads attributes of Python objects ran slower
compiled than in 3.11's specialising interpreter (measured: a compiled
fan-out loop over the stream queues, 13,670 -> 15,846 instructions a send).

- :func:`frame` (publisher): packing a 100-byte package's frame in Python
  costs a ``struct.pack`` of the header (~2,100 instructions on 3.11, most of
  them argument handling and the conversion of the 64-bit slot and source id)
  and a concatenation (~600): about a fifth of a whole ``pub.send``. Here the
  context's cached 24-byte prefix is copied, the four varying fields are
  stored, and the payload is copied after them: ~1,000 with the call.
- :func:`run_payloads` (subscriber): a run of packages of one source and slot
  is checked header by header in place and only the payloads are made
  (~800 instructions a package in Python, ~250 here).
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcmp, memcpy


cdef inline void _put64(uint8_t* p, uint64_t v) noexcept nogil:
    # Little-endian whatever the host (the wire's byte order); compilers turn
    # this into one store on little-endian machines.
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)
    p[2] = <uint8_t>(v >> 16)
    p[3] = <uint8_t>(v >> 24)
    p[4] = <uint8_t>(v >> 32)
    p[5] = <uint8_t>(v >> 40)
    p[6] = <uint8_t>(v >> 48)
    p[7] = <uint8_t>(v >> 56)


def frame(bytes prefix not None, uint64_t seq, uint64_t dest_seq, bytes data not None):
    """``prefix`` (24 bytes) + seq, dest_id 0, dest_seq, len(data) + ``data``."""
    if PyBytes_GET_SIZE(prefix) != 24:
        raise ValueError(f"a frame prefix is 24 bytes, got {PyBytes_GET_SIZE(prefix)}")
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    out = PyBytes_FromStringAndSize(NULL, 56 + n)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(out)
    memcpy(p, PyBytes_AS_STRING(prefix), 24)
    _put64(p + 24, seq)
    _put64(p + 32, 0)
    _put64(p + 40, dest_seq)
    _put64(p + 48, <uint64_t>n)
    memcpy(p + 56, PyBytes_AS_STRING(data), n)
    return out


cdef inline uint64_t _get64(const uint8_t* p) noexcept nogil:
    return (<uint64_t>p[0] | (<uint64_t>p[1] << 8) | (<uint64_t>p[2] << 16)
            | (<uint64_t>p[3] << 24) | (<uint64_t>p[4] << 32) | (<uint64_t>p[5] << 40)
            | (<uint64_t>p[6] << 48) | (<uint64_t>p[7] << 56))


def run_payloads(bytes data not None, Py_ssize_t at, Py_ssize_t size, Py_ssize_t k):
    """The payloads of the ``k`` packages of ``size`` bytes at ``data[at:]``, if a uniform run.

    The subscriber's side (``_decoder._uniform_payloads``): every header must
    be the first one's but for the seq, which counts up by one from the
    first's. All headers are compared before any payload is made; None if
    one differs. In pure Python each package costs a header ``bytes``, its
    share of a join and of a comparison with a template (~800 instructions);
    here a comparison in place and the payload's ``bytes``.
    """
    cdef Py_ssize_t stride = 56 + size
    if at < 0 or size < 1 or k < 1 or at + k * stride > PyBytes_GET_SIZE(data):
        raise ValueError(f"no run of {k} packages of {size} bytes at {at} in {PyBytes_GET_SIZE(data)} bytes")
    cdef const uint8_t* first = <const uint8_t*>PyBytes_AS_STRING(data) + at
    cdef const uint8_t* p = first
    cdef uint64_t seq = _get64(first + 24)
    cdef Py_ssize_t i
    for i in range(1, k):
        p += stride
        if (memcmp(p, first, 24) != 0 or _get64(p + 24) != seq + <uint64_t>i
                or memcmp(p + 32, first + 32, 24) != 0):
            return None
    cdef list out = [None] * k
    p = first + 56
    for i in range(k):
        out[i] = PyBytes_FromStringAndSize(<const char*>p, size)
        p += stride
    return out
