#!/usr/bin/env python3
"""Optional CRI v1 smoke test against a bed containerd (crictl is not in Debian).

Runs a host-network pod through the CRI plugin: Version, Status, ImageStatus,
RunPodSandbox (network=NODE), CreateContainer, StartContainer, reads the
container log, ExecSync, then stops and removes everything.

Needs grpcio + grpcio-tools (PyPI) and the CRI v1 api.proto. By default the
proto is taken from the k8s-cri crate in ~/.cargo/registry (run `cargo fetch`
in a crate that depends on k8s-cri); or pass --proto PATH.

  python3 tests/bed/cri-smoke.py SOCKET [--image docker.io/library/busybox:bed]
          [--expect-addr 10.213.0.10] [--proto v1.proto]
"""
import argparse
import glob
import os
import sys
import tempfile
import time
import uuid


def load_cri(proto):
    from grpc_tools import protoc
    import importlib

    out = tempfile.mkdtemp(prefix="oi-cri-py.")
    # copy to a stable file name so the generated module names are known
    src_dir = tempfile.mkdtemp(prefix="oi-cri-proto.")
    with open(proto, "rb") as f, open(os.path.join(src_dir, "cri_api.proto"), "wb") as g:
        g.write(f.read())
    rc = protoc.main([
        "protoc", f"-I{src_dir}",
        f"--python_out={out}", f"--grpc_python_out={out}",
        os.path.join(src_dir, "cri_api.proto"),
    ])
    if rc != 0:
        sys.exit(f"protoc failed on {proto}")
    sys.path.insert(0, out)
    return importlib.import_module("cri_api_pb2"), importlib.import_module("cri_api_pb2_grpc")


def find_proto():
    hits = sorted(glob.glob(os.path.expanduser(
        "~/.cargo/registry/src/*/k8s-cri-*/proto/v1.proto")))
    if not hits:
        sys.exit("no CRI v1 proto found: pass --proto PATH (api.proto of k8s.io/cri-api v1)")
    return hits[-1]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--image", default="docker.io/library/busybox:bed")
    ap.add_argument("--expect-addr", default="")
    ap.add_argument("--proto", default="")
    a = ap.parse_args()

    import grpc
    pb, pbg = load_cri(a.proto or find_proto())
    ch = grpc.insecure_channel(f"unix://{os.path.abspath(a.socket)}")
    rt = pbg.RuntimeServiceStub(ch)
    im = pbg.ImageServiceStub(ch)
    T = 30

    v = rt.Version(pb.VersionRequest(), timeout=T)
    print(f"Version: {v.runtime_name} {v.runtime_version} (CRI {v.runtime_api_version})")
    st = rt.Status(pb.StatusRequest(), timeout=T)
    for c in st.status.conditions:
        print(f"Status: {c.type}={c.status} {c.reason} {c.message[:80]}")

    ist = im.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=a.image)), timeout=T)
    if not ist.image.id:
        sys.exit(f"image {a.image} not present; import it with tests/bed/image.sh import")
    print(f"ImageStatus: {a.image} -> {ist.image.id[:19]}")

    logdir = tempfile.mkdtemp(prefix="oi-cri-logs.")
    uid = uuid.uuid4().hex[:8]
    ns_opts = pb.NamespaceOption(network=pb.NODE, pid=pb.CONTAINER, ipc=pb.POD)
    pod_cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=f"smoke-{uid}", uid=uid, namespace="oi-bed"),
        # no hostname: runc refuses one without a private UTS namespace, and
        # host-network pods share the host UTS namespace (kubelet leaves it empty)
        log_directory=logdir,
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns_opts)),
    )
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pod_cfg), timeout=T).pod_sandbox_id
    print(f"RunPodSandbox (host network): {pod[:12]}")
    ok = False
    try:
        ctr_cfg = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="main"),
            image=pb.ImageSpec(image=a.image),
            command=["/bin/sh", "-c"],
            args=["echo cri-smoke-ok; ip -o -4 addr; exec sleep 300"],
            log_path="main.log",
            linux=pb.LinuxContainerConfig(security_context=pb.LinuxContainerSecurityContext(
                namespace_options=ns_opts)),
        )
        cid = rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=pod, config=ctr_cfg, sandbox_config=pod_cfg), timeout=T).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=T)
        print(f"CreateContainer+StartContainer: {cid[:12]}")
        log = os.path.join(logdir, "main.log")
        text = ""
        for _ in range(100):
            if os.path.exists(log):
                text = open(log).read()
                if "cri-smoke-ok" in text:
                    break
            time.sleep(0.1)
        cs = rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=T).status
        print(f"ContainerStatus: state={pb.ContainerState.Name(cs.state)}")
        print("log:", *[l.split(" ", 3)[-1] for l in text.splitlines()], sep="\n  ")
        ex = rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=["cat", "/proc/1/comm"], timeout=10), timeout=T)
        print(f"ExecSync: exit={ex.exit_code} stdout={ex.stdout.decode().strip()!r}")
        ok = "cri-smoke-ok" in text and cs.state == pb.CONTAINER_RUNNING and ex.exit_code == 0
        if a.expect_addr and f"inet {a.expect_addr}/" not in text:
            print(f"expected address {a.expect_addr} not seen in the container's network")
            ok = False
        rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=2), timeout=T)
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=T)
    finally:
        rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=T)
        rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=T)
        print("StopPodSandbox+RemovePodSandbox: done")
        left = rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=T).items
        print(f"pods left: {len(left)}")
    print("CRI SMOKE", "OK" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
