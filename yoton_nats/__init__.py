"""yoton_nats: yoton networks on a NATS server or cluster (scheme ``nats``).

Work in progress: the sans-IO NATS client protocol (:mod:`yoton_nats._protocol`),
the packing of yoton packages into NATS messages (:mod:`yoton_nats._busframe`)
and a real ``nats-server`` for tests (:mod:`yoton_nats.testing`).
"""
