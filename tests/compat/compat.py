#!/usr/bin/env python3
"""Real-client compatibility suite for Berth.

Starts one `berth serve` on a loopback port with a fresh data directory, drives real
registry clients against it and checks digests end to end: what one client pushes, a
different client (another tool, or this script's own HTTP client, which verifies every blob
it fetches against its digest) pulls back with the same manifest digest and the same layer
digests.

    python3 tests/compat/compat.py [--berth PATH] [--only NAME,...] [--mode MODE] [--keep]

Every scenario runs twice by default (`--mode both`): against a Berth open to anyone, then
against one with authentication (one user, made with `htpasswd -B`), where each client is
given the credentials its own way and goes through Berth's token flow; names of the second
run end in `[auth]`.

`--berth` defaults to target/debug/berth, the binary `cargo test` has just built. `--only`
takes scenario names or their client prefix (`--only skopeo,oras-chunked`). `--keep` keeps
the temp directory (server data, access log, layouts) and prints where it is.

Output: `PASS name (1.2s)` or `FAIL name: reason` (with the failing command's stderr tail)
per scenario, then `N passed, M failed`. Exit code 1 if any scenario failed. A scenario whose
client is not installed fails under CI (the environment variable CI is set) and is skipped
elsewhere (`SKIP name: ...` naming the package to install), so a contributor without podman
can still run the rest; `--require-all` makes a missing client a failure anywhere.

Clients covered (Debian bookworm packages unless said otherwise):
  skopeo      login/logout; oci:, oci-archive:, dir:, docker-archive: in and out; gzip and zstd layers;
              --preserve-digests; inspect (raw, config); list-tags; delete; copy --all of a
              two-platform index; cross-repository mount
  podman, buildah
              build FROM scratch and two images FROM it; push as OCI and Docker v2s2; pull
              back; the shared base layer is one blob on the server's disk; manifest
              create/add/push --all; pull of one platform; login/logout; search (_catalog)
  containerd  a private containerd driven by ctr (--user with authentication): pull, push, an index with
              --all-platforms, import of a docker-archive with uncompressed layers
  umoci       an image built with umoci, pushed by skopeo, pulled by ctr
  docker      the CLI alone (no engine): login, manifest inspect/create/push --insecure
  oras        the `oras` PyPI package: an artifact with subject and artifactType found
              through the referrers API (with the artifactType filter), and a 12 MiB blob
              pushed in chunks

What it needs (Debian bookworm, as root; CI installs the same):
    apt-get install -y --no-install-recommends skopeo podman buildah containerd umoci docker.io \
        apache2-utils
    pip install oras==0.2.43
docker.io is only there for its docker CLI (20.10); no Docker engine is started. If another
docker CLI is on PATH too (this machine kind ships 28.x in /usr/local/bin), both are tested.

Nothing is pulled from the internet: every image is built here from seeded content
(deterministic tar layers, OCI layouts, docker-archives). Each client is isolated in the
temp directory where it allows it: vfs storage, chroot isolation and cgroupfs for
podman/buildah (nothing needs overlayfs, fuse or user namespaces) with a temp
registries.conf marking the registry insecure (plain HTTP); TLS flags for skopeo; temp auth
files and DOCKER_CONFIG; a containerd with its own root, state and socket and only the
native snapshotter. One exception: skopeo run as root keeps its blob-info cache in
/var/lib/containers/cache and has no option to move it.
Every scenario runs under a time budget; every process started is stopped by its PID.
"""

import argparse
import base64
import gzip
import hashlib
import importlib.util
import io
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
REF_NAME = "org.opencontainers.image.ref.name"

SUITE_LIMIT = 9 * 60  # seconds; the suite must end well within 10 minutes
REPO_ROOT = Path(__file__).resolve().parents[2]

# What CI has to install for each client the scenarios need.
INSTALL = {
    "skopeo": "Debian package skopeo",
    "podman": "Debian package podman",
    "buildah": "Debian package buildah",
    "containerd": "Debian package containerd",
    "ctr": "Debian package containerd",
    "umoci": "Debian package umoci",
    "docker": "Debian package docker.io (only its docker CLI is used)",
    "oras": "PyPI package oras",
    "htpasswd": "Debian package apache2-utils",
}

# The user of the authenticated run.
USER, PASSWORD = "compat", "compat-Pa55word"


# ---------------------------------------------------------------------------------------
# Running commands and checking


class Failure(Exception):
    """A check failed; the message says what was expected and what came."""


def check(cond, message):
    if not cond:
        raise Failure(message)


def check_eq(got, want, what):
    if got != want:
        raise Failure(f"{what}: got {got!r}, want {want!r}")


def tail(text, lines=15):
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").rstrip().splitlines()[-lines:])


def run(cmd, *, timeout=120, env=None, check=True, cwd=None):
    """Runs cmd with stdin closed and output captured (bytes); a non-zero exit or a timeout
    raises Failure with the command and the tail of its stderr."""
    cmd = [str(c) for c in cmd]
    shown = " ".join(cmd)
    try:
        p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=env,
                           stdin=subprocess.DEVNULL, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise Failure(f"`{shown}` timed out after {timeout}s\n{tail(e.stderr)}") from None
    if check and p.returncode != 0:
        raise Failure(f"`{shown}` exited {p.returncode}\n{tail(p.stderr or p.stdout)}")
    return p


def text(cmd, **kw):
    return run(cmd, **kw).stdout.decode()


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical(obj):
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def on_alarm(signum, frame):
    # Raised in the main thread wherever it is, so the scenario's finally blocks still run
    # and subprocess.run kills the command it was waiting for.
    raise Failure("the scenario ran out of its time budget")


# ---------------------------------------------------------------------------------------
# Test images, built from seeds: the same seed gives the same bytes on every run


def seeded_bytes(seed, n):
    return random.Random(seed).randbytes(n)


def layer_tar(seed, files=3, size=3000):
    """An uncompressed tar layer: a directory named after the seed holding `files` files of
    seeded random content, with fixed owners and times so that it is reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        top = tarfile.TarInfo(seed)
        top.type, top.mode, top.mtime = tarfile.DIRTYPE, 0o755, 0
        tar.addfile(top)
        for i in range(files):
            data = seeded_bytes(f"{seed}/{i}", size + i)
            info = tarfile.TarInfo(f"{seed}/file{i}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def gzip_bytes(data):
    return gzip.compress(data, mtime=0)


def image_config(arch, diff_ids, cmd):
    return canonical({
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": cmd},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": f"berth compat layer {i}"} for i in range(len(diff_ids))],
    })


@dataclass
class Image:
    """A manifest written into a layout, and what checks need to know about it."""
    desc: dict  # the manifest's descriptor (digest, size, media type, platform)
    manifest: dict
    config: bytes
    diff_ids: list  # digests of the uncompressed layers

    @property
    def digest(self):
        return self.desc["digest"]

    @property
    def layers(self):
        return [l["digest"] for l in self.manifest["layers"]]


class Layout:
    """Writes an OCI image layout (image-spec 1.1): blobs, index.json, oci-layout."""

    def __init__(self, path):
        self.path = Path(path)
        (self.path / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.path / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.refs = []
        self._save()

    def blob(self, data, media_type):
        digest = sha256(data)
        (self.path / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media_type, "size": len(data), "digest": digest}

    def image(self, seeds, *, arch="amd64", cmd=("/bin/app",), docker=False, size=3000):
        """An image of one gzip layer per seed. If docker: a Docker schema 2 manifest, written
        as Docker writes it (Go's json.MarshalIndent with three spaces, fields in Go's
        order): docker CLI 20.10 re-serializes manifests that way when it pushes a list and
        needs the digest to stay the same. Each layer holds three files of `size` bytes."""
        tars = [layer_tar(s, size=size) for s in seeds]
        diff_ids = [sha256(t) for t in tars]
        config = image_config(arch, diff_ids, list(cmd))
        layer_type = DOCKER_LAYER_GZIP if docker else OCI_LAYER_GZIP
        manifest = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
            "config": self.blob(config, DOCKER_CONFIG if docker else OCI_CONFIG),
            "layers": [self.blob(gzip_bytes(t), layer_type) for t in tars],
        }
        data = json.dumps(manifest, indent=3).encode() if docker else canonical(manifest)
        desc = self.blob(data, manifest["mediaType"])
        desc["platform"] = {"architecture": arch, "os": "linux"}
        return Image(desc, manifest, config, diff_ids)

    def index(self, images):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX,
                 "manifests": [i.desc for i in images]}
        return self.blob(canonical(index), OCI_INDEX)

    def tag(self, desc, name):
        ref = dict(desc, annotations={REF_NAME: name})
        ref.pop("platform", None)
        self.refs.append(ref)
        self._save()
        return f"oci:{self.path}:{name}"

    def _save(self):
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.refs}
        (self.path / "index.json").write_bytes(canonical(index))


def layout_digest(path, name):
    """The digest that tag `name` points at in an OCI layout written by any tool."""
    index = json.loads((Path(path) / "index.json").read_bytes())
    found = [m["digest"] for m in index["manifests"]
             if m.get("annotations", {}).get(REF_NAME) == name]
    check(len(found) == 1, f"layout {path}: {len(found)} entries tagged {name!r}")
    return found[0]


def layout_blob(path, digest):
    algo, hexpart = digest.split(":")
    data = (Path(path) / "blobs" / algo / hexpart).read_bytes()
    check_eq(sha256(data), digest, f"layout {path}: blob content")
    return data


def dir_image(path, layout, img):
    """Writes img in skopeo's dir: format (manifest.json and one file per blob)."""
    path.mkdir()
    (path / "version").write_text("Directory Transport Version: 1.1\n")
    (path / "manifest.json").write_bytes(layout_blob(layout.path, img.digest))
    for d in [img.manifest["config"]["digest"], *img.layers]:
        (path / d[7:]).write_bytes(layout_blob(layout.path, d))
    return f"dir:{path}"


def tar_directory(src, dest):
    with tarfile.open(dest, "w") as tar:
        for p in sorted(Path(src).rglob("*")):
            tar.add(p, arcname=str(p.relative_to(src)), recursive=False)
    return dest


@dataclass
class DockerArchive:
    path: Path
    config: bytes
    diff_ids: list


def docker_archive(path, seeds, repo_tag, *, arch="amd64", cmd=("/bin/app",)):
    """A `docker save` style archive: manifest.json, the config, and uncompressed layer tars."""
    tars = [layer_tar(s) for s in seeds]
    diff_ids = [sha256(t) for t in tars]
    config = image_config(arch, diff_ids, list(cmd))
    members = {f"{sha256(config)[7:]}.json": config}
    for d, t in zip(diff_ids, tars):
        members[f"{d[7:]}/layer.tar"] = t
    members["manifest.json"] = canonical([{
        "Config": f"{sha256(config)[7:]}.json",
        "RepoTags": [repo_tag],
        "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids],
    }])
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return DockerArchive(Path(path), config, diff_ids)


def read_docker_archive(path):
    """(config bytes, [layer tar bytes]) of a docker-archive written by any tool."""
    with tarfile.open(path) as tar:
        entry = json.loads(tar.extractfile("manifest.json").read())[0]
        config = tar.extractfile(entry["Config"]).read()
        layers = [tar.extractfile(l).read() for l in entry["Layers"]]
    return config, layers


# ---------------------------------------------------------------------------------------
# The registry, seen through plain HTTP: an independent client for every check


@dataclass
class Response:
    status: int
    headers: object
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Manifest:
    digest: str
    media_type: str
    body: bytes
    doc: dict = field(repr=False)

    @property
    def layers(self):
        return [l["digest"] for l in self.doc.get("layers", [])]

    @property
    def children(self):
        return self.doc.get("manifests", [])


class Registry:
    def __init__(self, host, creds=None):
        self.base = f"http://{host}"
        # Basic credentials go straight to /v2/ (Berth takes them as well as tokens).
        self.auth = ("Basic " + base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
                     if creds else None)

    def request(self, method, path, *, headers=None, data=None):
        headers = dict(headers or {})
        if self.auth:
            headers.setdefault("Authorization", self.auth)
        req = urllib.request.Request(self.base + path, method=method, headers=headers,
                                     data=data)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Response(r.status, r.headers, r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, e.headers, e.read())

    def manifest(self, repo, ref):
        """GETs a manifest accepting every type, and checks the digest Berth announces."""
        r = self.request("GET", f"/v2/{repo}/manifests/{ref}",
                         headers={"Accept": ", ".join(MANIFEST_TYPES)})
        check(r.status == 200, f"GET /v2/{repo}/manifests/{ref}: {r.status} {r.body[:300]!r}")
        digest = sha256(r.body)
        check_eq(r.headers.get("Docker-Content-Digest"), digest,
                 f"Docker-Content-Digest of {repo}:{ref}")
        if ref.startswith("sha256:"):
            check_eq(digest, ref, f"content of {repo}@{ref}")
        doc = json.loads(r.body)
        # mediaType is optional in an OCI manifest (umoci leaves it out).
        media_type = doc.get("mediaType") or (OCI_INDEX if "manifests" in doc else OCI_MANIFEST)
        check_eq(r.headers.get("Content-Type"), media_type, f"Content-Type of {repo}:{ref}")
        return Manifest(digest, media_type, r.body, doc)

    def status(self, method, path):
        return self.request(method, path, headers={"Accept": ", ".join(MANIFEST_TYPES)}).status

    def blob(self, repo, digest):
        r = self.request("GET", f"/v2/{repo}/blobs/{digest}")
        check(r.status == 200, f"GET /v2/{repo}/blobs/{digest}: {r.status}")
        check_eq(sha256(r.body), digest, f"content of blob {repo}@{digest}")
        return r.body

    def pull(self, repo, ref):
        """Pulls a manifest and everything it references (children of an index, config and
        layers of an image), checking each against its descriptor's digest and size."""
        m = self.manifest(repo, ref)
        if m.media_type in INDEX_TYPES:
            for child in m.children:
                got = self.pull(repo, child["digest"])
                check_eq(len(got.body), child["size"], f"size of {repo}@{child['digest']}")
        else:
            for desc in [m.doc["config"], *m.doc["layers"]]:
                check_eq(len(self.blob(repo, desc["digest"])), desc["size"],
                         f"size of blob {desc['digest']}")
        return m

    def tags(self, repo):
        r = self.request("GET", f"/v2/{repo}/tags/list")
        check(r.status == 200, f"GET /v2/{repo}/tags/list: {r.status}")
        return sorted(r.json().get("tags") or [])

    def catalog(self):
        r = self.request("GET", "/v2/_catalog?n=10000")
        check(r.status == 200, f"GET /v2/_catalog: {r.status}")
        return r.json()["repositories"]


# ---------------------------------------------------------------------------------------
# Processes this suite starts: Berth, and a private containerd


def start_daemon(cmd, log_path, **kw):
    with open(log_path, "wb") as log:
        return subprocess.Popen([str(c) for c in cmd], stdin=subprocess.DEVNULL, stderr=log,
                                **kw)


def stop_daemon(proc, name):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            print(f"note: {name} (pid {proc.pid}) ignored SIGTERM; killing it", flush=True)
            proc.kill()
            proc.wait(timeout=15)


class Berth:
    """`berth serve` on a free loopback port, logging JSON lines to berth.log."""

    def __init__(self, binary, workdir, htpasswd=None):
        self.data = Path(workdir) / "berth-data"
        self.log_path = Path(workdir) / "berth.log"
        auth = ["--htpasswd", htpasswd] if htpasswd else []
        self.proc = start_daemon(
            [binary, "serve", "--listen", "127.0.0.1:0", "--data", self.data,
             "--log-format", "json", *auth], self.log_path, stdout=subprocess.PIPE)
        # The first stdout line is `berth listening on http://127.0.0.1:PORT`.
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("berth listening on http://"):
            stop_daemon(self.proc, "berth")
            raise Failure(f"berth did not start: {line!r}\n{tail(self.log_path.read_text())}")
        self.host = line.removeprefix("berth listening on http://")

    def requests(self):
        """The access log so far: one dict per request (method, path, route, status...)."""
        out = []
        for line in self.log_path.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("target") == "berth::access":
                    out.append(entry)
        return out

    def blob_files(self, digest):
        """Every file under the data directory named after the digest's hex."""
        hexpart = digest.split(":")[1]
        return sorted(p for p in self.data.rglob(f"*{hexpart}*") if p.is_file())

    def stored_blobs(self):
        return sorted(p.name for p in (self.data / "blobs").rglob("*") if p.is_file())

    def stop(self):
        stop_daemon(self.proc, "berth")


class Containerd:
    """A private containerd: own root, state and socket, the native snapshotter only (no
    overlayfs), and none of the plugins that need a host set up for Kubernetes."""

    DISABLED = [
        "io.containerd.grpc.v1.cri",
        "io.containerd.internal.v1.opt",
        "io.containerd.internal.v1.tracing",
        "io.containerd.tracing.processor.v1.otlp",
        "io.containerd.snapshotter.v1.aufs",
        "io.containerd.snapshotter.v1.btrfs",
        "io.containerd.snapshotter.v1.devmapper",
        "io.containerd.snapshotter.v1.overlayfs",
        "io.containerd.snapshotter.v1.zfs",
    ]

    def __init__(self, workdir):
        d = Path(workdir)
        d.mkdir(parents=True)
        self.socket = d / "containerd.sock"
        config = d / "config.toml"
        config.write_text("\n".join([
            "version = 2",
            f'root = "{d / "root"}"',
            f'state = "{d / "state"}"',
            f"disabled_plugins = {json.dumps(self.DISABLED)}",
            "[grpc]",
            f'  address = "{self.socket}"',
            "[ttrpc]",
            f'  address = "{self.socket}.ttrpc"',
            "[debug]",
            '  address = ""',
            "[metrics]",
            '  address = ""',
        ]) + "\n")
        self.log_path = d / "containerd.log"
        self.env = dict(os.environ, CONTAINERD_SNAPSHOTTER="native")
        self.proc = start_daemon(["containerd", "--config", config], self.log_path)
        deadline = time.monotonic() + 20
        while run(["ctr", "-a", self.socket, "version"], check=False, timeout=10).returncode:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise Failure(f"containerd did not start\n{tail(self.log_path.read_text())}")
            time.sleep(0.2)

    def ctr(self, *args, timeout=120):
        return text(["ctr", "-a", self.socket, "-n", "compat", *args], timeout=timeout,
                    env=self.env)

    def image_digest(self, ref):
        for line in self.ctr("images", "ls").splitlines()[1:]:
            cols = line.split()
            if cols[0] == ref:
                return cols[2]
        raise Failure(f"ctr images ls has no {ref}")

    def content(self, digest):
        data = run(["ctr", "-a", self.socket, "-n", "compat", "content", "get", digest],
                   env=self.env).stdout
        check_eq(sha256(data), digest, "content in containerd's store")
        return data

    def stop(self):
        stop_daemon(self.proc, "containerd")


# ---------------------------------------------------------------------------------------
# The suite: one Berth, shared daemons, one temp dir per scenario


class Suite:
    """One Berth for every scenario. With `auth`, Berth has one user (made with htpasswd -B)
    and lets nobody else in; every client is given the credentials its own way: the
    containers auth file (skopeo, podman, buildah), `ctr --user`, the docker config file, an
    oras login, Basic credentials for this script's own HTTP client."""

    def __init__(self, berth_binary, root, auth=False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.authenticated = auth
        htpasswd = None
        if auth:
            htpasswd = self.root / "htpasswd"
            run(["htpasswd", "-B", "-b", "-c", htpasswd, USER, PASSWORD])
        self.binary = berth_binary
        self.berth = Berth(berth_binary, self.root, htpasswd)
        self.host = self.berth.host
        self.reg = Registry(self.host, (USER, PASSWORD) if auth else None)
        self.ctr_user = ["--user", f"{USER}:{PASSWORD}"] if auth else []
        self._containerd = None
        # podman and buildah read this instead of the host's registries.conf: plain HTTP to
        # Berth, and no other registry to fall back on. Credentials go to a temp file too.
        conf = self.root / "registries.conf"
        conf.write_text(f'unqualified-search-registries = []\n\n[[registry]]\n'
                        f'location = "{self.host}"\ninsecure = true\n')
        auth_file = self.root / "auth.json"
        auth_file.write_text(self.auth_json())
        self.env = dict(os.environ, CONTAINERS_REGISTRIES_CONF=str(conf),
                        REGISTRY_AUTH_FILE=str(auth_file))
        self.tmp = None

    def auth_json(self):
        """A containers or docker auth file: logged in to Berth in the authenticated run."""
        if not self.authenticated:
            return '{"auths": {}}'
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return json.dumps({"auths": {self.host: {"auth": token}}})

    def docker_env(self):
        """DOCKER_CONFIG for the docker CLI, with the credentials in the authenticated run."""
        d = self.tmp / "docker-config"
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(self.auth_json())
        return dict(os.environ, DOCKER_CONFIG=str(d))

    def start_scenario(self, name):
        self.tmp = self.root / name
        self.tmp.mkdir()

    def ref(self, repo_tag):
        return f"docker://{self.host}/{repo_tag}"

    def containerd(self):
        if self._containerd is None:
            self._containerd = Containerd(self.root / "containerd")
        return self._containerd

    def skopeo(self, command, *args, opts=(), timeout=120):
        """skopeo [opts] command [plain-HTTP flags] args: skopeo 1.9 reads no registries.conf
        from the environment, so it gets its TLS flags on every command."""
        tls = (["--src-tls-verify=false", "--dest-tls-verify=false"] if command == "copy"
               else ["--tls-verify=false"])
        return run(["skopeo", *opts, command, *tls, *args], env=self.env, timeout=timeout)

    def push(self, src, repo_tag, *flags):
        """skopeo copy SRC to Berth; the digest skopeo reports must be what Berth serves."""
        digestfile = self.tmp / "digest"
        self.skopeo("copy", "--digestfile", digestfile, *flags, src, self.ref(repo_tag))
        pushed = digestfile.read_text().strip()
        repo, tag = repo_tag.rsplit(":", 1)
        check_eq(self.reg.manifest(repo, tag).digest, pushed,
                 f"digest Berth serves for {repo_tag} vs the one skopeo pushed")
        return pushed

    def close(self):
        if self._containerd is not None:
            self._containerd.stop()
        self.berth.stop()


class Containers:
    """podman and buildah with their own storage under the scenario's temp dir: vfs (a plain
    copy per layer, needs no overlayfs), chroot isolation, cgroupfs, a file event log."""

    def __init__(self, s, name):
        d = s.tmp / name
        self.root, self.tmpdir = d / "root", d / "tmp"
        self.tmpdir.mkdir(parents=True)
        # podman refuses a runroot path longer than 50 characters.
        self.runroot = Path(tempfile.mkdtemp(prefix="run-", dir=s.root))
        self.auth = d / "auth.json"
        self.auth.write_text(s.auth_json())
        self.env = dict(s.env, STORAGE_DRIVER="vfs", BUILDAH_ISOLATION="chroot",
                        REGISTRY_AUTH_FILE=str(self.auth))
        self.storage = ["--root", self.root, "--runroot", self.runroot, "--storage-driver", "vfs"]

    def podman(self, *args, timeout=120, check=True):
        return run(["podman", *self.storage, "--tmpdir", self.tmpdir, "--cgroup-manager",
                    "cgroupfs", "--events-backend", "file", *args],
                   env=self.env, timeout=timeout, check=check)

    def buildah(self, *args, timeout=120):
        return run(["buildah", *self.storage, *args], env=self.env, timeout=timeout)

    def build(self, context, tag, containerfile, *flags):
        (context / "Containerfile").write_text(containerfile)
        self.buildah("build", "--isolation", "chroot", *flags, "-t", tag,
                     "-f", context / "Containerfile", context)

    def inspect(self, ref, fmt):
        return self.podman("image", "inspect", "--format", fmt, ref).stdout.decode().strip()


# ---------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Scenario:
    name: str
    fn: object
    needs: tuple
    budget: int


SCENARIOS = []


def scenario(name, needs, budget=120):
    def register(fn):
        SCENARIOS.append(Scenario(name, fn, tuple(needs), budget))
        return fn
    return register


@scenario("skopeo-transports", needs=["skopeo"])
def skopeo_transports(s):
    """Push from each source transport skopeo reads; pull back into each. The layers are a
    few MiB, so skopeo streams them."""
    lay = Layout(s.tmp / "layout")
    img = lay.image(["transports-a", "transports-b"], size=1 << 20)
    src = lay.tag(img.desc, "v1")
    # oci:, oci-archive: and dir: hold the manifest as is: its digest must survive the push.
    archive = tar_directory(lay.path, s.tmp / "layout.tar")
    s.skopeo("copy", src, f"dir:{s.tmp / 'dir-src'}")
    sources = {"oci": src, "oci-archive": f"oci-archive:{archive}:v1",
               "dir": f"dir:{s.tmp / 'dir-src'}"}
    for name, ref in sources.items():
        check_eq(s.push(ref, f"transports/{name}:v1"), img.digest, f"digest pushed from {name}:")
        s.reg.pull(f"transports/{name}", "v1")

    # A docker-archive holds plain tars: skopeo compresses them, so the layer digests are new,
    # but each layer Berth serves must unpack to the tar that went in, and the config is kept.
    da = docker_archive(s.tmp / "docker.tar", ["transports-a", "transports-b"], "compat/app:v1")
    s.push(f"docker-archive:{da.path}", "transports/docker-archive:v1")
    m = s.reg.pull("transports/docker-archive", "v1")
    check_eq(m.media_type, DOCKER_MANIFEST, "manifest type pushed from a docker-archive")
    check_eq(m.doc["config"]["digest"], sha256(da.config), "config pushed from a docker-archive")
    unpacked = [sha256(gzip.decompress(s.reg.blob("transports/docker-archive", d)))
                for d in m.layers]
    check_eq(unpacked, da.diff_ids, "uncompressed layers pushed from a docker-archive")

    # Out of Berth into each destination transport.
    pulled = s.ref("transports/oci:v1")
    s.skopeo("copy", pulled, f"oci:{s.tmp / 'oci-out'}:v1")
    check_eq(layout_digest(s.tmp / "oci-out", "v1"), img.digest, "digest pulled into oci:")
    for d in img.layers:
        layout_blob(s.tmp / "oci-out", d)
    s.skopeo("copy", pulled, f"oci-archive:{s.tmp / 'out.tar'}:v1")
    with tarfile.open(s.tmp / "out.tar") as tar:
        tar.extractall(s.tmp / "oci-archive-out", filter="data")
    check_eq(layout_digest(s.tmp / "oci-archive-out", "v1"), img.digest,
             "digest pulled into oci-archive:")
    s.skopeo("copy", pulled, f"dir:{s.tmp / 'dir-out'}")
    check_eq(sha256((s.tmp / "dir-out" / "manifest.json").read_bytes()), img.digest,
             "digest pulled into dir:")
    s.skopeo("copy", pulled, f"docker-archive:{s.tmp / 'docker-out.tar'}:compat/app:v1")
    config, layers = read_docker_archive(s.tmp / "docker-out.tar")
    check_eq(config, img.config, "config pulled into docker-archive:")
    check_eq([sha256(l) for l in layers], img.diff_ids, "layers pulled into docker-archive:")


@scenario("skopeo-compression", needs=["skopeo"])
def skopeo_compression(s):
    """Uncompressed layers pushed as zstd and as gzip carry the right media types and bytes."""
    for fmt, media_type, magic in (("zstd", OCI_LAYER_ZSTD, b"\x28\xb5\x2f\xfd"),
                                   ("gzip", OCI_LAYER_GZIP, b"\x1f\x8b")):
        # Content of its own per format: skopeo 1.9 would otherwise reuse the layers it just
        # pushed in the other compression (its blob-info cache links them), whatever the flag.
        da = docker_archive(s.tmp / f"{fmt}.tar", [f"compress-{fmt}-a", f"compress-{fmt}-b"],
                            "compat/z:v1")
        repo = f"compression/{fmt}"
        s.push(f"docker-archive:{da.path}", f"{repo}:v1", "--format", "oci",
               "--dest-compress-format", fmt)
        m = s.reg.pull(repo, "v1")
        check_eq([l["mediaType"] for l in m.doc["layers"]], [media_type] * 2,
                 f"layer media types of the {fmt} push")
        for d in m.layers:
            check(s.reg.blob(repo, d).startswith(magic), f"{repo}@{d} is not {fmt} data")
        if fmt == "gzip":
            check_eq([sha256(gzip.decompress(s.reg.blob(repo, d))) for d in m.layers],
                     da.diff_ids, "gzip layers, uncompressed")
        # skopeo pulls the same image back: same manifest, same layer digests.
        s.skopeo("copy", s.ref(f"{repo}:v1"), f"oci:{s.tmp / fmt}:v1")
        check_eq(layout_digest(s.tmp / fmt, "v1"), m.digest, f"digest of the {fmt} image pulled")
        for d in m.layers:
            layout_blob(s.tmp / fmt, d)


@scenario("skopeo-preserve-digests", needs=["skopeo"])
def skopeo_preserve_digests(s):
    """--preserve-digests both ways, for an OCI and a Docker schema 2 manifest (from dir:, as
    skopeo's oci: transport only reads OCI manifests)."""
    lay = Layout(s.tmp / "layout")
    for kind, docker in (("oci", False), ("docker", True)):
        img = lay.image([f"preserve-{kind}"], docker=docker)
        src = dir_image(s.tmp / f"dir-{kind}", lay, img) if docker else lay.tag(img.desc, kind)
        repo = f"preserve/{kind}"
        check_eq(s.push(src, f"{repo}:v1", "--preserve-digests"),
                 img.digest, f"digest of the {kind} manifest pushed")
        check_eq(s.reg.pull(repo, "v1").body, layout_blob(lay.path, img.digest),
                 f"{kind} manifest bytes")
        out = s.tmp / f"out-{kind}"
        s.skopeo("copy", "--preserve-digests", s.ref(f"{repo}:v1"), f"oci:{out}:v1")
        check_eq(layout_digest(out, "v1"), img.digest, f"digest of the {kind} manifest pulled")
        for d in [img.manifest["config"]["digest"], *img.layers]:
            layout_blob(out, d)


@scenario("skopeo-inspect", needs=["skopeo"])
def skopeo_inspect(s):
    """inspect (raw, config, parsed), list-tags, delete; in a repository four levels deep."""
    repo = "inspect/nested/deeper/app"
    lay = Layout(s.tmp / "layout")
    a, b = lay.image(["inspect-a"], cmd=["/a"]), lay.image(["inspect-b"], cmd=["/b"])
    s.push(lay.tag(a.desc, "a"), f"{repo}:v1")
    s.push(lay.tag(b.desc, "b"), f"{repo}:v2")
    s.push(f"oci:{lay.path}:a", f"{repo}:v3")
    ref = s.ref(f"{repo}:v1")

    raw = s.skopeo("inspect", "--raw", ref).stdout
    check_eq(sha256(raw), a.digest, "digest of `skopeo inspect --raw`")
    check_eq(s.skopeo("inspect", "--config", "--raw", ref).stdout, a.config,
             "`skopeo inspect --config --raw`")
    check_eq(json.loads(s.skopeo("inspect", "--config", ref).stdout)["config"]["Cmd"], ["/a"],
             "Cmd from `skopeo inspect --config`")
    info = json.loads(s.skopeo("inspect", ref).stdout)
    check_eq((info["Digest"], info["Layers"], info["Architecture"]),
             (a.digest, a.layers, "amd64"), "`skopeo inspect`")

    tags = json.loads(s.skopeo("list-tags", f"docker://{s.host}/{repo}").stdout)
    check_eq(sorted(tags["Tags"]), ["v1", "v2", "v3"], "`skopeo list-tags`")

    # skopeo deletes the manifest a tag points at, by digest: the manifest and every tag on
    # it must be gone, and nothing else.
    s.skopeo("delete", s.ref(f"{repo}:v2"))
    for r in ("v2", b.digest):
        check_eq(s.reg.status("GET", f"/v2/{repo}/manifests/{r}"), 404,
                 f"GET of deleted manifest {r}")
    check_eq(s.reg.manifest(repo, "v1").digest, a.digest, "v1 after deleting v2")
    check_eq(s.reg.tags(repo), ["v1", "v3"], "tags after deleting v2")
    s.skopeo("delete", s.ref(f"{repo}:v3"))
    for r in ("v1", "v3", a.digest):
        check_eq(s.reg.status("GET", f"/v2/{repo}/manifests/{r}"), 404,
                 f"GET of {r} after deleting the manifest v1 and v3 share")
    check_eq(s.reg.tags(repo), [], "tags after deleting every manifest")


@scenario("skopeo-multiarch", needs=["skopeo"])
def skopeo_multiarch(s):
    """copy --all of a two-platform index, both ways; one platform picked by --override-arch."""
    lay = Layout(s.tmp / "layout")
    amd = lay.image(["multi-amd64"], arch="amd64")
    arm = lay.image(["multi-arm64"], arch="arm64")
    index = lay.index([amd, arm])
    check_eq(s.push(lay.tag(index, "multi"), "multiarch/app:v1", "--all"), index["digest"],
             "digest of the index pushed")
    m = s.reg.pull("multiarch/app", "v1")
    check_eq(m.media_type, OCI_INDEX, "media type of the pushed index")
    check_eq([(c["digest"], c["platform"]["architecture"]) for c in m.children],
             [(amd.digest, "amd64"), (arm.digest, "arm64")], "children of the pushed index")

    s.skopeo("copy", "--all", s.ref("multiarch/app:v1"), f"oci:{s.tmp / 'all'}:v1")
    check_eq(layout_digest(s.tmp / "all", "v1"), index["digest"], "index pulled with --all")
    for d in [amd.digest, arm.digest, *amd.layers, *arm.layers]:
        layout_blob(s.tmp / "all", d)
    s.skopeo("copy", s.ref("multiarch/app:v1"), f"oci:{s.tmp / 'arm'}:v1",
             opts=["--override-arch", "arm64"])
    check_eq(layout_digest(s.tmp / "arm", "v1"), arm.digest, "arm64 image picked from the index")


@scenario("skopeo-mount", needs=["skopeo"])
def skopeo_mount(s):
    """A copy between two repositories of Berth mounts the blobs instead of uploading them."""
    lay = Layout(s.tmp / "layout")
    img = lay.image(["mount-a", "mount-b"])
    s.push(lay.tag(img.desc, "v1"), "mount/src:v1")
    stored, seen = s.berth.stored_blobs(), len(s.berth.requests())

    digestfile = s.tmp / "copied"
    debug = s.skopeo("copy", "--digestfile", digestfile, s.ref("mount/src:v1"),
                     s.ref("mount/dst:v1"), opts=["--debug"]).stderr.decode()
    check_eq(digestfile.read_text().strip(), img.digest, "digest of the copy")
    check_eq(s.reg.pull("mount/dst", "v1").digest, img.digest, "digest Berth serves for the copy")
    for d in img.layers:
        check(f"mount=sha256%3A{d[7:]}" in debug, f"skopeo did not try to mount {d}")
    check(debug.count("... mount OK") >= len(img.layers),
          f"skopeo reports {debug.count('... mount OK')} mounts, want {len(img.layers)}:\n"
          + tail("\n".join(l for l in debug.splitlines() if "mount" in l)))
    new = s.berth.requests()[seen:]
    starts = [r["status"] for r in new
              if r["method"] == "POST" and r["path"] == "/v2/mount/dst/blobs/uploads/"]
    # 201 is a mount; skopeo never tries one for the config, which it uploads again (202).
    check_eq(sorted(starts), [201] * len(img.layers) + [202],
             "access log: upload starts in mount/dst")
    check_eq(s.berth.stored_blobs(), stored, "blob files on disk after the mount")


def write_build_context(context):
    """What the builds ADD: a tarball for the base image, one file for each derived image."""
    (context / "base.tar").write_bytes(layer_tar("podman-base", files=4, size=20000))
    for name in ("one", "two"):
        (context / f"{name}.txt").write_bytes(seeded_bytes(f"podman-{name}", 5000))


@scenario("podman-build-push-pull", needs=["buildah", "podman", "skopeo"], budget=180)
def podman_build_push_pull(s):
    """buildah builds; buildah pushes OCI and podman pushes Docker v2s2; a fresh podman pulls.
    The base layer is the same blob in every image and one file on Berth's disk."""
    builder = Containers(s, "builder")
    ctx = s.tmp / "context"
    ctx.mkdir()
    write_build_context(ctx)
    builder.build(ctx, "localhost/compat/base:1", 'FROM scratch\nADD base.tar /\nCMD ["/sh"]\n')
    for name in ("one", "two"):
        builder.build(ctx, f"localhost/compat/{name}:1",
                      f'FROM localhost/compat/base:1\nADD {name}.txt /{name}.txt\n'
                      f'CMD ["/{name}.txt"]\n')

    pushed = {}
    for name in ("one", "two"):
        ref = f"{s.host}/podman/{name}"
        digestfile = s.tmp / "digest"
        builder.buildah("push", "--format", "oci", "--digestfile", digestfile,
                        f"localhost/compat/{name}:1", f"docker://{ref}:oci")
        pushed[f"{name}:oci"] = digestfile.read_text().strip()
        builder.podman("push", "--format", "v2s2", "--digestfile", digestfile,
                       f"localhost/compat/{name}:1", f"docker://{ref}:docker")
        pushed[f"{name}:docker"] = digestfile.read_text().strip()

    manifests = {}
    for tag, digest in pushed.items():
        name, fmt = tag.split(":")
        m = s.reg.pull(f"podman/{name}", fmt)
        check_eq(m.digest, digest, f"digest Berth serves for podman/{tag}")
        check_eq(m.media_type, OCI_MANIFEST if fmt == "oci" else DOCKER_MANIFEST,
                 f"media type of podman/{tag}")
        check_eq(len(m.layers), 2, f"layers of podman/{tag}")
        manifests[tag] = m
    base = {tag: m.layers[0] for tag, m in manifests.items()}
    check(len(set(base.values())) == 1, f"base layer differs between images: {base}")
    check(manifests["one:oci"].layers[1] != manifests["two:oci"].layers[1],
          "the two derived images have the same top layer")
    files = s.berth.blob_files(manifests["one:oci"].layers[0])
    check_eq([str(p.relative_to(s.berth.data)) for p in files],
             [f"blobs/sha256/{base['one:oci'][7:9]}/{base['one:oci'][7:]}"],
             "files holding the shared base layer on Berth's disk")

    # A podman with empty storage pulls every image back from Berth.
    puller = Containers(s, "puller")
    for tag, m in manifests.items():
        ref = f"{s.host}/podman/{tag}"
        puller.podman("pull", "--quiet", ref)
        # one:oci and one:docker have the same config, so they are one image in podman's
        # storage, known by both manifest digests.
        repo_digests = json.loads(puller.inspect(ref, "{{json .RepoDigests}}"))
        check(f"{s.host}/podman/{tag.split(':')[0]}@{m.digest}" in repo_digests,
              f"podman pulled {tag} but lists {repo_digests}, not {m.digest}")
        config = json.loads(s.reg.blob(f"podman/{tag.split(':')[0]}", m.doc["config"]["digest"]))
        check_eq(json.loads(puller.inspect(ref, "{{json .RootFS.Layers}}")),
                 config["rootfs"]["diff_ids"], f"layers podman unpacked for {tag}")


def readme_block(after):
    """The first ```sh block of README.md that follows the line containing `after`."""
    text = (REPO_ROOT / "README.md").read_text()
    start = text.index(after)
    block = text[text.index("```sh\n", start) + len("```sh\n"):]
    return block[:block.index("```")]


@scenario("readme-offline-quickstart", needs=["buildah", "skopeo"], budget=180)
def readme_offline_quickstart(s):
    """The README's quick start without internet, run as written: buildah builds a tiny
    image and pushes it, skopeo lists and inspects it, `berth pull` and `berth copy` use it.
    Only the registry's address and the binary's path are this run's own."""
    c = Containers(s, "readme")
    storage = s.tmp / "storage.conf"
    storage.write_text(f'[storage]\ndriver = "vfs"\nrunroot = "{c.runroot}"\n'
                       f'graphroot = "{c.root}"\n')
    docker = s.tmp / "docker"
    docker.mkdir()
    (docker / "config.json").write_text(s.auth_json())
    script = (readme_block("Without internet access")
              .replace("localhost:5000", s.host)
              .replace("./target/release/berth", str(s.binary)))
    env = dict(c.env, CONTAINERS_STORAGE_CONF=str(storage), BERTH_STORE=str(s.tmp / "store"),
               DOCKER_CONFIG=str(docker), TMPDIR=str(c.tmpdir))
    run(["bash", "-euo", "pipefail", "-c", script], env=env, timeout=170, cwd=s.tmp)
    check("team/hello-copy" in s.reg.catalog(), "berth copy made no team/hello-copy")
    m = s.reg.pull("team/hello", "v1")
    check_eq(s.reg.manifest("team/hello-copy", "v1").digest, m.digest, "digest of the copy")
    config = json.loads(s.reg.blob("team/hello", m.doc["config"]["digest"]))
    check_eq(config["config"].get("Cmd"), ["/hello.txt"], "the pushed image's CMD")


@scenario("podman-manifest", needs=["buildah", "podman", "skopeo"], budget=180)
def podman_manifest(s):
    """podman manifest create/add/push --all of a two-platform list; a pull of one platform."""
    c = Containers(s, "builder")
    ctx = s.tmp / "context"
    ctx.mkdir()
    images = {}
    for arch in ("amd64", "arm64"):
        (ctx / "arch.txt").write_bytes(seeded_bytes(f"manifest-{arch}", 4000))
        # FROM scratch with ADD and CMD runs nothing, so another arch needs no emulation.
        c.build(ctx, f"localhost/compat/multi:{arch}",
                'FROM scratch\nADD arch.txt /arch.txt\nCMD ["/arch.txt"]\n',
                "--platform", f"linux/{arch}")
        images[arch] = f"localhost/compat/multi:{arch}"
    c.podman("manifest", "create", "localhost/compat/list:1")
    for ref in images.values():
        c.podman("manifest", "add", "localhost/compat/list:1", f"containers-storage:{ref}")
    digestfile = s.tmp / "digest"
    c.podman("manifest", "push", "--all", "--digestfile", digestfile, "localhost/compat/list:1",
             s.ref("podman/list:1"))
    m = s.reg.pull("podman/list", "1")
    check_eq(m.digest, digestfile.read_text().strip(), "digest of the pushed list")
    check(m.media_type in INDEX_TYPES, f"podman pushed a {m.media_type}, not a list")
    by_arch = {c["platform"]["architecture"]: c["digest"] for c in m.children}
    check_eq(sorted(by_arch), ["amd64", "arm64"], "platforms in the pushed list")

    puller = Containers(s, "puller")
    ref = f"{s.host}/podman/list:1"
    puller.podman("pull", "--quiet", "--arch", "arm64", ref)
    check_eq(puller.inspect(ref, "{{.Architecture}}"), "arm64", "arch podman pulled")
    # podman records both the list's digest and the one of the image it picked.
    check_eq(sorted(json.loads(puller.inspect(ref, "{{json .RepoDigests}}"))),
             sorted(f"{s.host}/podman/list@{d}" for d in (m.digest, by_arch["arm64"])),
             "digests of the image podman pulled with --arch arm64")
    info = json.loads(s.skopeo("inspect", s.ref("podman/list:1"),
                               opts=["--override-arch", "arm64"]).stdout)
    # skopeo reports the digest of the list it read, and the layers of the image it picked.
    arm = s.reg.manifest("podman/list", by_arch["arm64"])
    check_eq((info["Digest"], info["Architecture"], info["Layers"]),
             (m.digest, "arm64", arm.layers),
             "image skopeo picks with --override-arch arm64")


@scenario("podman-login", needs=["podman", "skopeo"])
def podman_login(s):
    """podman login stores credentials and logout removes them. Without authentication,
    `/v2/` answers 200 to anyone, so any credentials are accepted (as Distribution without
    auth does) and never sent. With it, a wrong password is refused, the right one works,
    pulls and pushes go through the token flow, and after logout podman is refused."""
    c = Containers(s, "podman")
    c.auth.write_text('{"auths": {}}')
    if s.authenticated:
        bad = c.podman("login", "--username", USER, "--password", "wrong", s.host, check=False)
        check(bad.returncode != 0, "podman login with a wrong password succeeded")
    password = PASSWORD if s.authenticated else "secret"
    out = c.podman("login", "--username", USER, "--password", password, s.host)
    check("Login Succeeded" in out.stdout.decode(), f"podman login said {out.stdout!r}")
    auths = json.loads(c.auth.read_text())["auths"]
    check_eq(auths.get(s.host, {}).get("auth"),
             base64.b64encode(f"{USER}:{password}".encode()).decode(),
             "credentials podman stored")
    check_eq(c.podman("login", "--get-login", s.host).stdout.decode().strip(), USER,
             "podman login --get-login")

    # Pull and push while logged in.
    lay = Layout(s.tmp / "layout")
    img = lay.image(["login"])
    s.push(lay.tag(img.desc, "v1"), "login/app:v1")
    seen = len(s.berth.requests())
    c.podman("pull", "--quiet", f"{s.host}/login/app:v1")
    check_eq(c.inspect(f"{s.host}/login/app:v1", "{{.Digest}}"), img.digest,
             "digest pulled while logged in")
    c.podman("push", f"{s.host}/login/app:v1", s.ref("login/copy:v1"))
    check_eq(s.reg.pull("login/copy", "v1").layers, img.layers, "layers pushed while logged in")
    requests = s.berth.requests()[seen:]
    if s.authenticated:
        tokens = [r for r in requests if r["path"] == "/token" and r["status"] == 200]
        check(tokens, "podman got no token from Berth's token endpoint")
    else:
        check(401 not in [r["status"] for r in requests],
              "Berth answered 401 with authentication off")

    c.podman("logout", s.host)
    check(s.host not in json.loads(c.auth.read_text())["auths"], "credentials kept by logout")
    after = c.podman("login", "--get-login", s.host, check=False)
    check(after.returncode != 0, "podman login --get-login still succeeds after logout")
    if s.authenticated:
        denied = c.podman("pull", "--quiet", f"{s.host}/login/copy:v1", check=False)
        check(denied.returncode != 0, "podman pulled from Berth after logout")


@scenario("skopeo-login", needs=["skopeo"])
def skopeo_login(s):
    """skopeo login/logout with its own auth file, and a copy with the stored credentials."""
    authfile = s.tmp / "skopeo-auth.json"
    authfile.write_text('{"auths": {}}')
    env = dict(s.env, REGISTRY_AUTH_FILE=str(authfile))
    login = ["skopeo", "login", "--tls-verify=false", "--authfile", authfile]
    if s.authenticated:
        bad = run([*login, "-u", USER, "-p", "wrong", s.host], env=env, check=False)
        check(bad.returncode != 0, "skopeo login with a wrong password succeeded")
    password = PASSWORD if s.authenticated else "secret"
    out = run([*login, "-u", USER, "-p", password, s.host], env=env)
    check("Login Succeeded" in out.stdout.decode(), f"skopeo login said {out.stdout!r}")
    lay = Layout(s.tmp / "layout")
    img = lay.image(["skopeo-login"])
    run(["skopeo", "copy", "--dest-tls-verify=false", "--authfile", authfile,
         lay.tag(img.desc, "v1"), s.ref("login/skopeo:v1")], env=env)
    check_eq(s.reg.pull("login/skopeo", "v1").digest, img.digest, "digest skopeo pushed")
    run(["skopeo", "logout", "--authfile", authfile, s.host], env=env)
    check(s.host not in json.loads(authfile.read_text()).get("auths", {}),
          "credentials kept by skopeo logout")
    if s.authenticated:
        denied = run(["skopeo", "inspect", "--tls-verify=false", "--authfile", authfile,
                      s.ref("login/skopeo:v1")], env=env, check=False)
        check(denied.returncode != 0, "skopeo read from Berth after logout")


@scenario("docker-login", needs=["docker", "skopeo"])
def docker_login(s):
    """docker login with the CLI alone (it checks the credentials itself, no engine), with
    every docker CLI on PATH; then docker manifest inspect with what login stored."""
    lay = Layout(s.tmp / "layout")
    img = lay.image(["docker-login"], docker=True)
    s.push(dir_image(s.tmp / "img", lay, img), "login/docker:v1", "--preserve-digests")
    for n, (cli, version) in enumerate(docker_clis()):
        d = s.tmp / f"docker-{n}"
        d.mkdir()
        (d / "config.json").write_text('{"auths": {}}')
        env = dict(os.environ, DOCKER_CONFIG=str(d))
        if s.authenticated:
            bad = run([cli, "login", "-u", USER, "-p", "wrong", s.host], env=env, check=False)
            check(bad.returncode != 0, f"{version}: docker login with a wrong password worked")
        password = PASSWORD if s.authenticated else "secret"
        out = run([cli, "login", "-u", USER, "-p", password, s.host], env=env, timeout=60)
        check("Login Succeeded" in out.stdout.decode(), f"{version}: docker login said "
              f"{out.stdout!r}")
        seen = json.loads(text([cli, "manifest", "inspect", "--insecure",
                                f"{s.host}/login/docker:v1"], env=env, timeout=60))
        check_eq(seen, img.manifest, f"{version}: docker manifest inspect after login")
        run([cli, "logout", s.host], env=env, timeout=60)


@scenario("podman-search", needs=["podman", "skopeo"])
def podman_search(s):
    """podman search REGISTRY/ lists the catalog (Berth has no /v1/search: podman falls back
    to _catalog); --list-tags lists tags."""
    lay = Layout(s.tmp / "layout")
    img = lay.image(["search"])
    src = lay.tag(img.desc, "v1")
    for repo_tag in ("search/alpha:v1", "search/beta:v1", "search/beta:v2"):
        s.push(src, repo_tag)
    c = Containers(s, "podman")
    names = c.podman("search", "--limit", "10000", "--format", "{{.Name}}",
                     f"{s.host}/").stdout.decode().split()
    check_eq(sorted(names), sorted(f"{s.host}/{r}" for r in s.reg.catalog()),
             "podman search REGISTRY/ vs _catalog")
    names = c.podman("search", "--format", "{{.Name}}", f"{s.host}/search/").stdout.decode()
    check_eq(sorted(names.split()), [f"{s.host}/search/alpha", f"{s.host}/search/beta"],
             "podman search REGISTRY/search/")
    # podman 4.3 ignores --format with --list-tags: a NAME TAG table.
    rows = c.podman("search", "--list-tags", f"{s.host}/search/beta").stdout.decode()
    check_eq(sorted(tuple(r.split()) for r in rows.splitlines()[1:]),
             [(f"{s.host}/search/beta", "v1"), (f"{s.host}/search/beta", "v2")],
             "podman search --list-tags")


@scenario("containerd-pull-push", needs=["containerd", "ctr", "skopeo"])
def containerd_pull_push(s):
    """skopeo pushes, ctr pulls and pushes to another repository (mounting every blob from
    the one it pulled from), skopeo reads it back."""
    ctr = s.containerd()
    lay = Layout(s.tmp / "layout")
    img = lay.image(["ctr-a", "ctr-b"], size=1 << 20)
    s.push(lay.tag(img.desc, "v1"), "containerd/src:v1")
    src, dst = f"{s.host}/containerd/src:v1", f"{s.host}/containerd/dst:v1"
    ctr.ctr("images", "pull", "--plain-http", *s.ctr_user, src)
    check_eq(ctr.image_digest(src), img.digest, "digest ctr pulled")
    check_eq(ctr.content(img.digest), canonical(img.manifest), "manifest ctr pulled")
    for d in img.layers:
        ctr.content(d)
    ctr.ctr("images", "tag", src, dst)
    seen = len(s.berth.requests())
    ctr.ctr("images", "push", "--plain-http", *s.ctr_user, dst)
    check_eq(s.reg.pull("containerd/dst", "v1").digest, img.digest, "digest ctr pushed")
    starts = [r["status"] for r in s.berth.requests()[seen:]
              if r["method"] == "POST" and r["path"] == "/v2/containerd/dst/blobs/uploads/"]
    check_eq(starts, [201] * (1 + len(img.layers)),
             "access log: ctr's upload starts (201: mounted)")
    raw = s.skopeo("inspect", "--raw", s.ref("containerd/dst:v1")).stdout
    check_eq(sha256(raw), img.digest, "digest skopeo reads from what ctr pushed")


@scenario("containerd-index", needs=["containerd", "ctr", "skopeo"])
def containerd_index(s):
    """A two-platform index: skopeo pushes, ctr pulls --all-platforms and pushes it back."""
    ctr = s.containerd()
    lay = Layout(s.tmp / "layout")
    amd = lay.image(["ctr-index-amd64"], arch="amd64")
    arm = lay.image(["ctr-index-arm64"], arch="arm64")
    index = lay.index([amd, arm])
    s.push(lay.tag(index, "v1"), "containerd/multi:v1", "--all")
    src, dst = f"{s.host}/containerd/multi:v1", f"{s.host}/containerd/multi-copy:v1"
    ctr.ctr("images", "pull", "--plain-http", *s.ctr_user, "--all-platforms", src)
    check_eq(ctr.image_digest(src), index["digest"], "digest of the index ctr pulled")
    for d in [amd.digest, arm.digest, *amd.layers, *arm.layers]:
        ctr.content(d)
    ctr.ctr("images", "tag", src, dst)
    ctr.ctr("images", "push", "--plain-http", *s.ctr_user, dst)
    m = s.reg.pull("containerd/multi-copy", "v1")
    check_eq(m.digest, index["digest"], "digest of the index ctr pushed")
    s.skopeo("copy", "--all", s.ref("containerd/multi-copy:v1"), f"oci:{s.tmp / 'out'}:v1")
    check_eq(layout_digest(s.tmp / "out", "v1"), index["digest"], "index skopeo pulled")
    for d in [amd.digest, arm.digest, *amd.layers, *arm.layers]:
        layout_blob(s.tmp / "out", d)


@scenario("containerd-import", needs=["containerd", "ctr", "skopeo"])
def containerd_import(s):
    """ctr imports a docker-archive of uncompressed layers and pushes it as is: Berth takes
    plain-tar layers, and skopeo pulls the same digests."""
    ctr = s.containerd()
    ref = f"{s.host}/containerd/imported:v1"
    da = docker_archive(s.tmp / "docker.tar", ["ctr-import-a", "ctr-import-b"], ref)
    ctr.ctr("images", "import", "--no-unpack", da.path)
    ctr.ctr("images", "push", "--plain-http", *s.ctr_user, ref)
    m = s.reg.pull("containerd/imported", "v1")
    check_eq(m.digest, ctr.image_digest(ref), "digest ctr pushed")
    check_eq([l["mediaType"] for l in m.doc["layers"]], [DOCKER_LAYER_TAR] * 2,
             "layer media types ctr pushed")
    check_eq(m.layers, da.diff_ids, "uncompressed layers ctr pushed")
    check_eq(m.doc["config"]["digest"], sha256(da.config), "config ctr pushed")
    s.skopeo("copy", s.ref("containerd/imported:v1"), f"dir:{s.tmp / 'out'}")
    check_eq(sha256((s.tmp / "out" / "manifest.json").read_bytes()), m.digest,
             "digest skopeo pulled")
    for d in da.diff_ids:
        check_eq(sha256((s.tmp / "out" / d[7:]).read_bytes()), d, "layer skopeo pulled")


@scenario("umoci", needs=["umoci", "skopeo", "containerd", "ctr"])
def umoci_image(s):
    """umoci builds an image (init, new, unpack, add a file, repack, insert, config), skopeo
    pushes it from oci:, ctr pulls it."""
    layout, bundle = s.tmp / "layout", s.tmp / "bundle"
    image = f"{layout}:v1"
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", image])
    run(["umoci", "unpack", "--image", image, bundle])
    (bundle / "rootfs" / "hello.txt").write_bytes(seeded_bytes("umoci-hello", 6000))
    run(["umoci", "repack", "--image", image, bundle])
    extra = s.tmp / "extra.bin"
    extra.write_bytes(seeded_bytes("umoci-extra", 9000))
    run(["umoci", "insert", "--image", image, extra, "/opt/extra.bin"])
    run(["umoci", "config", "--image", image, "--config.cmd", "/hello.txt",
         "--config.workingdir", "/opt"])
    digest = layout_digest(layout, "v1")
    manifest = json.loads(layout_blob(layout, digest))
    check_eq(len(manifest["layers"]), 2, "layers umoci made (repack, insert)")

    check_eq(s.push(f"oci:{image}", "umoci/app:v1"), digest, "digest skopeo pushed")
    m = s.reg.pull("umoci/app", "v1")
    config = json.loads(s.reg.blob("umoci/app", m.doc["config"]["digest"]))
    check_eq((config["config"]["Cmd"], config["config"]["WorkingDir"]), (["/hello.txt"], "/opt"),
             "config umoci wrote")
    ctr = s.containerd()
    ref = f"{s.host}/umoci/app:v1"
    ctr.ctr("images", "pull", "--plain-http", *s.ctr_user, ref)
    check_eq(ctr.image_digest(ref), digest, "digest ctr pulled")
    for d in m.layers:
        check_eq(ctr.content(d), layout_blob(layout, d), f"layer {d} ctr pulled")


def docker_clis():
    """Every distinct docker CLI on PATH, as (path, version): the machine's own and Debian's
    docker.io (20.10, in /usr/bin) behave differently, and both are worth covering."""
    found = {}
    for d in os.get_exec_path():
        path = Path(d) / "docker"
        if os.access(path, os.X_OK) and path.resolve() not in found:
            found[path.resolve()] = text([path, "--version"], timeout=30).strip()
    return sorted(found.items())


@scenario("docker-manifest", needs=["docker", "skopeo"])
def docker_manifest(s):
    """The docker CLI alone (no engine): manifest inspect, create and push --insecure, with
    every docker CLI on PATH."""
    env = s.docker_env()
    lay = Layout(s.tmp / "layout")
    images = {arch: lay.image([f"docker-{arch}"], arch=arch, docker=True)
              for arch in ("amd64", "arm64")}
    for arch, img in images.items():
        s.push(dir_image(s.tmp / arch, lay, img), f"docker/{arch}:v1", "--preserve-digests")
    amd, arm = f"{s.host}/docker/amd64:v1", f"{s.host}/docker/arm64:v1"

    for n, (cli, version) in enumerate(docker_clis()):
        def docker(*args):
            try:
                return text([cli, *args], env=env, timeout=60)
            except Failure as e:
                raise Failure(f"{version}: {e}") from None

        seen = json.loads(docker("manifest", "inspect", "--insecure", amd))
        check_eq(seen, images["amd64"].manifest, f"{version}: docker manifest inspect")
        verbose = json.loads(docker("manifest", "inspect", "--insecure", "--verbose", amd))
        check_eq(verbose["Descriptor"]["digest"], images["amd64"].digest,
                 f"{version}: digest from docker manifest inspect --verbose")

        repo = f"docker/list-{n}"
        lst = f"{s.host}/{repo}:v1"
        docker("manifest", "create", "--insecure", lst, amd, arm)
        pushed = docker("manifest", "push", "--insecure", lst).strip().splitlines()[-1]
        m = s.reg.pull(repo, "v1")
        check_eq(m.digest, pushed, f"{version}: digest docker manifest push printed")
        check_eq(m.media_type, DOCKER_LIST, f"{version}: media type of the list pushed")
        check_eq({c["platform"]["architecture"]: c["digest"] for c in m.children},
                 {arch: img.digest for arch, img in images.items()},
                 f"{version}: images in the list")
        raw = s.skopeo("inspect", "--raw", s.ref(f"{repo}:v1")).stdout
        check_eq(sha256(raw), m.digest, f"{version}: digest skopeo reads from the list")
        back = json.loads(docker("manifest", "inspect", "--insecure", lst))
        check_eq(back, m.doc, f"{version}: docker manifest inspect of the list")


# oras is imported where it is used: every other scenario runs without it installed.
def oras_client(s):
    import oras.provider
    # oras-py's token backend asks for a token once, with the scope of the first challenge
    # (pull, for the HEAD that starts a push), and on a 401 for more scope it retries with
    # the same token: a push fails on any registry that answers insufficient scope with 401
    # as Distribution does. Its basic backend sends the credentials with each request, which
    # Berth takes on /v2/ as it takes tokens.
    client = oras.provider.Registry(hostname=s.host, insecure=True,
                                    auth_backend="basic" if s.authenticated else "token")
    if s.authenticated:
        client.login(USER, PASSWORD, hostname=s.host,
                     config_path=str(s.tmp / "oras-auth.json"))
    return client


def referrers(s, repo, digest, artifact_type=None):
    # Percent-encoded as Go clients do (url.Values): a raw "+" would be read as a space.
    query = f"?artifactType={urllib.parse.quote(artifact_type, safe='')}" if artifact_type else ""
    r = s.reg.request("GET", f"/v2/{repo}/referrers/{digest}{query}")
    check(r.status == 200, f"GET referrers of {digest}{query}: {r.status} {r.body[:300]!r}")
    check_eq(r.headers.get("Content-Type"), OCI_INDEX, "Content-Type of the referrers list")
    return r


@scenario("oras-referrers", needs=["oras", "skopeo"])
def oras_referrers(s):
    """oras pushes two artifacts about one image, one of them before the image itself; both
    are found through the referrers API, with their artifactType and annotations."""
    import oras.oci
    lay = Layout(s.tmp / "layout")
    img = lay.image(["oras-subject"])
    subject = oras.oci.Subject(mediaType=OCI_MANIFEST, digest=img.digest, size=img.desc["size"])
    client = oras_client(s)
    files = s.tmp / "files"
    files.mkdir()

    # An SBOM through oras' own push, before its subject exists (the spec lets referrers and
    # subject come in either order). With no artifactType, the referrers API must report the
    # config's media type in its place.
    sbom_type = "application/vnd.compat.sbom.v1+json"
    sbom, config = files / "sbom.json", files / "config.json"
    sbom.write_bytes(canonical({"seed": seeded_bytes("oras-sbom", 64).hex()}))
    config.write_bytes(b'{"tool":"compat"}')
    note = {"org.example.compat.note": "pushed before its subject"}
    r = client.push(target=f"{s.host}/oras/app:sbom", files=[f"{sbom}:application/json"],
                    manifest_config=f"{config}:{sbom_type}", subject=subject,
                    manifest_annotations=note, disable_path_validation=True, quiet=True)
    check_eq(r.headers.get("OCI-Subject"), img.digest, "OCI-Subject header on the SBOM push")
    sbom_digest = s.reg.pull("oras/app", "sbom").digest
    check_eq(r.headers.get("Docker-Content-Digest"), sbom_digest, "digest of the SBOM push")
    s.push(lay.tag(img.desc, "v1"), "oras/app:v1")

    # A signature with an explicit artifactType and the empty config, through oras' blob and
    # manifest uploads (its push() has no artifactType parameter).
    sig_type = "application/vnd.compat.signature.v1"
    sig, empty = files / "sig.bin", files / "empty.json"
    sig.write_bytes(seeded_bytes("oras-signature", 512))
    empty.write_bytes(b"{}")
    container = client.get_container(f"{s.host}/oras/app:sig")
    layer = oras.oci.NewLayer(str(sig), media_type="application/octet-stream")
    empty_desc = oras.oci.NewLayer(str(empty), media_type=OCI_EMPTY)
    for path, desc in ((sig, layer), (empty, empty_desc)):
        r = client.upload_blob(str(path), container, desc)
        check(r.status_code in (200, 201), f"oras upload of {path.name}: {r.status_code}")
    layer["annotations"] = {"org.opencontainers.image.title": "sig.bin"}
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": sig_type,
                "config": empty_desc, "layers": [layer], "subject": subject.__dict__}
    r = client.upload_manifest(manifest, container)
    check_eq(r.status_code, 201, "status of the signature manifest PUT")
    check_eq(r.headers.get("OCI-Subject"), img.digest, "OCI-Subject on the signature push")
    sig_digest = s.reg.pull("oras/app", "sig").digest
    check_eq(r.headers.get("Docker-Content-Digest"), sig_digest, "digest of the signature push")

    found = referrers(s, "oras/app", img.digest).json()["manifests"]
    check_eq({d["digest"]: (d.get("artifactType"), d.get("annotations")) for d in found},
             {sbom_digest: (sbom_type, note), sig_digest: (sig_type, None)},
             "referrers of the image (digest: artifactType, annotations)")
    check_eq(len(found), 2, "number of referrers")
    for artifact_type, digest in ((sig_type, sig_digest), (sbom_type, sbom_digest)):
        filtered = referrers(s, "oras/app", img.digest, artifact_type)
        check_eq([d["digest"] for d in filtered.json()["manifests"]], [digest],
                 f"referrers filtered by artifactType {artifact_type}")
        check_eq(filtered.headers.get("OCI-Filters-Applied"), "artifactType",
                 "OCI-Filters-Applied of the filtered referrers")
    nothing = sha256(b"no such manifest")
    check_eq(referrers(s, "oras/app", nothing).json()["manifests"], [],
             "referrers of a digest nothing refers to")

    out = s.tmp / "pulled"
    got = client.pull(target=f"{s.host}/oras/app:sbom", outdir=str(out))
    check_eq([Path(p).read_bytes() for p in got], [sbom.read_bytes()], "SBOM oras pulled")
    got = client.pull(target=f"{s.host}/oras/app@{sig_digest}", outdir=str(out))
    check_eq([Path(p).read_bytes() for p in got], [sig.read_bytes()], "signature oras pulled")

    # oras' delete_tag resolves the tag and deletes the manifest by digest: the SBOM must be
    # gone by both names and from the referrers of the image.
    check(client.delete_tag(f"{s.host}/oras/app", "sbom"), "oras could not delete tag sbom")
    for ref in ("sbom", sbom_digest):
        check_eq(s.reg.status("GET", f"/v2/oras/app/manifests/{ref}"), 404,
                 f"GET of the deleted SBOM by {ref}")
    check_eq([d["digest"] for d in referrers(s, "oras/app", img.digest).json()["manifests"]],
             [sig_digest], "referrers after the SBOM was deleted")


@scenario("oras-chunked", needs=["oras"])
def oras_chunked(s):
    """A 12 MiB blob pushed by oras in chunks of 5 MiB (POST, PATCH x3 with Content-Range,
    the last one short, PUT), pulled back whole."""
    data = seeded_bytes("oras-chunked", 12 << 20)
    path = s.tmp / "big.bin"
    path.write_bytes(data)
    seen = len(s.berth.requests())
    client = oras_client(s)
    client.push(target=f"{s.host}/oras/big:v1", files=[str(path)], do_chunked=True,
                chunk_size=5 << 20, disable_path_validation=True, quiet=True)
    # With authentication, oras-py sends each request bare first and again with credentials
    # after the 401: the challenges are not part of the upload.
    patches = [r for r in s.berth.requests()[seen:]
               if r["method"] == "PATCH" and r["status"] != 401]
    check_eq([(r["route"], r["status"]) for r in patches], [("upload", 202)] * 3,
             "PATCH requests of the chunked upload")
    m = s.reg.pull("oras/big", "v1")
    check_eq(m.layers, [sha256(data)], "layer oras pushed")
    got = client.pull(target=f"{s.host}/oras/big:v1", outdir=str(s.tmp / "pulled"))
    check(len(got) == 1 and sha256(Path(got[0]).read_bytes()) == sha256(data),
          "the 12 MiB blob oras pulled back differs")


# ---------------------------------------------------------------------------------------


def missing_clients(needs):
    missing = []
    for name in needs:
        found = (importlib.util.find_spec(name) is not None if name == "oras"
                 else shutil.which(name) is not None)
        if not found:
            missing.append(f"{name} (CI must install {INSTALL[name]})")
    return missing


def select_scenarios(only):
    if not only:
        return SCENARIOS
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    chosen = [sc for sc in SCENARIOS
              if any(sc.name == w or sc.name.startswith(w + "-") for w in wanted)]
    unknown = [w for w in wanted
               if not any(sc.name == w or sc.name.startswith(w + "-") for sc in SCENARIOS)]
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(unknown)}; known: "
                 + ", ".join(sc.name for sc in SCENARIOS))
    return chosen


def default_berth():
    return REPO_ROOT / "target" / "debug" / "berth"


class Skipped(Exception):
    """A client the scenario needs is not installed, and missing clients may be skipped."""


def run_scenario(suite, sc, deadline, require_all):
    """Runs one scenario within its budget; returns None if it passed, else why it failed.
    Raises Skipped if a client is missing and `require_all` is off."""
    missing = missing_clients(sc.needs)
    if missing:
        if not require_all:
            raise Skipped("needs " + "; ".join(missing))
        return "required client missing: " + "; ".join(missing)
    left = deadline - time.monotonic()
    if left < 10:
        return "not run: the suite's time limit was reached"
    suite.start_scenario(sc.name)
    signal.alarm(int(min(sc.budget, left)))
    try:
        sc.fn(suite)
    except Failure as e:
        return str(e)
    except Exception:
        return "error in the scenario\n" + tail(traceback.format_exc(), 12)
    finally:
        signal.alarm(0)
    return None


def print_failure(name, reason):
    first, _, rest = reason.partition("\n")
    print(f"FAIL {name}: {first}")
    for line in rest.splitlines():
        print(f"    {line}")


def run_mode(args, chosen, root, auth, started, counts):
    """Every chosen scenario against one Berth, anonymous or with authentication."""
    suffix = " [auth]" if auth else ""
    suite = None
    try:
        if auth and not shutil.which("htpasswd"):
            missing = f"htpasswd (CI must install {INSTALL['htpasswd']})"
            for sc in chosen:
                if args.require_all:
                    counts["failed"] += 1
                    print_failure(sc.name + suffix, "required client missing: " + missing)
                else:
                    counts["skipped"] += 1
                    print(f"SKIP {sc.name}{suffix}: needs {missing}")
            return
        suite = Suite(args.berth.resolve(), root, auth=auth)
        print(f"berth {args.berth} on {suite.host}" + (" with authentication" if auth else ""))
        for sc in chosen:
            t0 = time.monotonic()
            try:
                reason = run_scenario(suite, sc, started + SUITE_LIMIT, args.require_all)
            except Skipped as e:
                counts["skipped"] += 1
                print(f"SKIP {sc.name}{suffix}: {e}")
                continue
            if reason is None:
                counts["passed"] += 1
                print(f"PASS {sc.name}{suffix} ({time.monotonic() - t0:.1f}s)")
            else:
                counts["failed"] += 1
                print_failure(sc.name + suffix, reason)
    except Failure as e:  # Berth did not start
        counts["failed"] += 1
        print_failure("berth" + suffix, str(e))
    finally:
        if suite is not None:
            suite.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--berth", type=Path, default=default_berth(),
                        help="the berth binary (default target/debug/berth)")
    parser.add_argument("--only", help="comma-separated scenario names or client prefixes")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory")
    parser.add_argument("--mode", choices=["both", "anonymous", "auth"], default="both",
                        help="run every scenario against an open Berth, one with "
                             "authentication (an htpasswd user), or both (default)")
    parser.add_argument("--require-all", action="store_true",
                        default=bool(os.environ.get("CI")),
                        help="a missing client fails its scenario (default when CI is set)")
    args = parser.parse_args()
    chosen = select_scenarios(args.only)
    if not args.berth.exists():
        sys.exit(f"no berth binary at {args.berth}: build it or pass --berth")
    sys.stdout.reconfigure(line_buffering=True)

    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="berth-compat-"))
    signal.signal(signal.SIGALRM, on_alarm)
    counts = {"passed": 0, "failed": 0, "skipped": 0}
    modes = {"both": ["anonymous", "auth"], "anonymous": ["anonymous"], "auth": ["auth"]}
    try:
        for mode in modes[args.mode]:
            run_mode(args, chosen, root / mode, mode == "auth", started, counts)
    finally:
        if args.keep:
            print(f"kept {root} (berth access logs: {root}/*/berth.log)")
        else:
            shutil.rmtree(root, ignore_errors=True)
    passed, failed, skipped = counts["passed"], counts["failed"], counts["skipped"]
    print(f"total {time.monotonic() - started:.1f}s")
    if skipped:
        print(f"{skipped} skipped: their clients are not installed (CI installs them)")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
