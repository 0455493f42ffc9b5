"""The scoring server: repository -> runtimes -> batcher -> gRPC services.

Modules, from the transport-free inside out:

- ``runtimes``  load one artifact once, run it on numpy inputs (TorchScript, ONNX Runtime,
  torch.export; CPU or CUDA).
- ``signature`` what a model takes: the manifest, plus the registry spec's checks.
- ``tensors``   wire bytes <-> arrays, checked before anything is allocated.
- ``batcher``   dynamic batching per (model, runtime), compute off the event loop.
- ``stats``     exact, split-independent reductions (Score's reduction, Evaluate).
- ``core``      ``ScoringCore``: loads the repository and scores; knows nothing of gRPC.
- ``errors``    the exceptions the core raises, each naming its status.
- ``status``    the one exception -> gRPC status mapping.
- ``servicer``  ``cvscore.v1.Scoring``; ``kserve`` ``inference.GRPCInferenceService``
  (Open Inference Protocol, from a private descriptor pool).
- ``app``       configuration, health, reflection, lifecycle, ``cvscore serve``.
"""
