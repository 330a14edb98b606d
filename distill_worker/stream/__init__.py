"""The stream phase in rooms: `consumer` (read new sample-log records, join feedback), `trainer` (label and
update), `checkpoint` (what a restart resumes from) and `driver` (the loop that runs them, `StreamPhase`,
and the `worker run --mode stream` job, `stream_main`)."""

from distill_worker.stream.driver import CONSUMER, LeaseLostError, StreamHooks, StreamPhase, stream_main
from distill_worker.stream.trainer import StreamTrainer

__all__ = ["CONSUMER", "LeaseLostError", "StreamHooks", "StreamPhase", "StreamTrainer", "stream_main"]
