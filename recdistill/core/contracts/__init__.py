"""Every contract that crosses a process boundary, as versioned typed structs, in one place:

- `records`: what the student server writes to the sample log and the worker reads (sampled requests,
  feedback), with a format version on every record;
- `registry`: a model version's manifest and the registry's state (the active-version pointer);
- `teacher`: the teacher's tensor spec (the Triton model's inputs and output) and the Triton model
  config generated from it;
- `onnx`: the ONNX Runtime session options shared by the server and the worker's gate;
- `rank_grpc`: the mapping between the JSON ranking request and its gRPC message.
"""
