"""test_onnx_check.py — python3-onnx's checker on ONNX files; driven by test_onnx_runtime.c.

    python3 test_onnx_check.py --probe     exit 0 if onnx imports, else 77
    python3 test_onnx_check.py FILE...      onnx.checker.check_model(full_check=True)
                                            (which also runs shape inference) on each
                                            file; exit 0 when all pass, 1 when not
"""
import sys

try:
    import onnx
except ImportError as e:
    print(f"SKIP: python3-onnx not importable ({e}); apt-get install python3-onnx")
    sys.exit(77)

if sys.argv[1:] == ["--probe"]:
    sys.exit(0)
status = 0
for path in sys.argv[1:]:
    try:
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
        out = inferred.graph.output[0].type.tensor_type.shape.dim
        print(f"onnx_check: {path}: valid (onnx {onnx.__version__}, ir {model.ir_version}, "
              f"opset {model.opset_import[0].version}, {len(model.graph.node)} nodes, "
              f"{len(model.graph.initializer)} initializers, output "
              f"{[d.dim_value for d in out]})")
    except Exception as e:  # the checker's own exception types vary by version
        print(f"onnx_check: {path}: INVALID: {e}")
        status = 1
sys.exit(status)
