"""Defaults shared by the command line and the job; no imports, so the CLI starts fast."""

#: Images per CNN batch and per Arrow batch.  Measured on 2,060 images, 2 cores: with ONNX
#: Runtime 16 and 64 run at the same speed, a Python worker at 0.4 GB against 1.0 GB; with
#: TensorFlow 16 runs at 69.5 images/s and 1.0 GB, 32 at 66-68 and 1.3 GB, 64 no faster at
#: 1.7 GB (the activations grow with the batch).
DEFAULT_BATCH_SIZE = 16

#: Inference engines: ONNX Runtime runs the network converted to ONNX on the driver (about
#: twice TensorFlow's speed on CPU, same features within 1e-4); TensorFlow rebuilds the
#: Keras network on each worker.
ENGINES = ("onnxruntime", "tensorflow")
DEFAULT_ENGINE = "onnxruntime"
