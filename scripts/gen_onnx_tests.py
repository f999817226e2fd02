#!/usr/bin/env python3
"""Generates the ONNX conformance material that sparkc's tests read.

Writes, under OUT (default: tests/data/generated):
  node/<test>/model.onnx, node/<test>/test_data_set_<i>/{input,output}_<j>.pb, node/<test>/meta.json
      the official backend node tests, from onnx.backend.test.case.node.collect_testcases;
  light/light_<name>.onnx and light/light_<name>_output_0.pb
      the real architectures that ship inside the onnx package;
  manifest.json
      the onnx version and the list of tests written.

Pinned to onnx==1.23.2 (see .ci/run); another version is an error, since the conformance counts in
docs/conformance.md are for that one.
"""
import argparse
import json
import os
import shutil
import sys
import warnings

import onnx
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

PINNED = "1.23.2"


def value_kind(type_proto):
    """Names the kind of an ONNX value type: tensor, sequence, optional, map or sparse."""
    for kind in ("tensor_type", "sequence_type", "optional_type", "map_type", "sparse_tensor_type"):
        if type_proto.HasField(kind):
            return kind[: -len("_type")]
    return "unknown"


def serialize(value, type_proto):
    """Serializes one input or output the way onnx's own cmd_tools.generate_data does."""
    kind = value_kind(type_proto)
    if kind == "map":
        return numpy_helper.from_dict(value).SerializeToString()
    if kind == "sequence":
        return numpy_helper.from_list(value).SerializeToString()
    if kind == "optional":
        return numpy_helper.from_optional(value).SerializeToString()
    if isinstance(value, onnx.TensorProto):
        return value.SerializeToString()
    return numpy_helper.from_array(value).SerializeToString()


def uses_strings(type_proto):
    """True when a value type holds strings (anywhere inside sequences and optionals)."""
    if type_proto.HasField("tensor_type"):
        return type_proto.tensor_type.elem_type == onnx.TensorProto.STRING
    if type_proto.HasField("sequence_type"):
        return uses_strings(type_proto.sequence_type.elem_type)
    if type_proto.HasField("optional_type"):
        return uses_strings(type_proto.optional_type.elem_type)
    return type_proto.HasField("map_type")


def graph_ops(graph):
    """Names every op type in a graph and in the subgraphs of its If, Loop and Scan nodes."""
    ops = set()
    for node in graph.node:
        ops.add(node.op_type)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                ops |= graph_ops(subgraph)
    return ops


def write_case(case, root):
    case_dir = os.path.join(root, "node", case.name)
    os.makedirs(case_dir, exist_ok=True)
    graph = case.model.graph
    with open(os.path.join(case_dir, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    for i, (inputs, outputs) in enumerate(case.data_sets):
        set_dir = os.path.join(case_dir, f"test_data_set_{i}")
        os.makedirs(set_dir, exist_ok=True)
        for j, value in enumerate(inputs):
            with open(os.path.join(set_dir, f"input_{j}.pb"), "wb") as f:
                f.write(serialize(value, graph.input[j].type))
        for j, value in enumerate(outputs):
            with open(os.path.join(set_dir, f"output_{j}.pb"), "wb") as f:
                f.write(serialize(value, graph.output[j].type))
    meta = {
        "name": case.name,
        "rtol": case.rtol,
        "atol": case.atol,
        "data_sets": len(case.data_sets),
        "inputs": [value_kind(v.type) for v in graph.input],
        "outputs": [value_kind(v.type) for v in graph.output],
        "ops": sorted(graph_ops(graph)),
        "opset": next((o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")), 0),
        "strings": any(uses_strings(v.type) for v in list(graph.input) + list(graph.output)),
    }
    with open(os.path.join(case_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def copy_light_models(root):
    source = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    target = os.path.join(root, "light")
    os.makedirs(target, exist_ok=True)
    names = []
    for name in sorted(os.listdir(source)):
        shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
        if name.endswith(".onnx"):
            names.append(name[: -len(".onnx")])
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "generated"))
    args = parser.parse_args()
    if onnx.__version__ != PINNED:
        sys.exit(f"gen_onnx_tests: onnx=={PINNED} is required, found {onnx.__version__}")
    root = os.path.abspath(args.out)
    if os.path.isdir(root):
        shutil.rmtree(root)
    os.makedirs(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = collect_testcases(None)
    written, failed = [], []
    for case in cases:
        try:
            write_case(case, root)
            written.append(case.name)
        except Exception as error:  # a case onnx itself cannot serialize is reported, not hidden
            failed.append({"name": case.name, "error": str(error)})
    light = copy_light_models(root)
    manifest = {"onnx": onnx.__version__, "node": sorted(written), "unserializable": failed, "light": light}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    print(f"gen_onnx_tests: {len(written)} node tests, {len(failed)} unserializable, {len(light)} light models in {root}")


if __name__ == "__main__":
    main()
