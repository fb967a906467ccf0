"""Netboot image assembly: our per-store-path CPIO cache vs the makeInitrd pipe.

A synthetic closure of ~500 store paths and ~1 GiB is built with the real
`nix` (busybox builders copying slices of a deterministic data pool, so the
same seed gives the same store paths on every run); it is cached under
/var/cache/nixie-bench/netboot with a GC root.

Measured in one run, on the same closure:
- reference: `find <closure> | cpio -o -H newc | zstd -T0` (GNU cpio, the
  way nixpkgs' makeInitrd builds an initrd), to a file;
- ours cold: every per-path archive built into an empty cache, at our
  default zstd level (1) and at the reference's level (3);
- ours, time to first byte of a cached image (fresh process state: the
  closure query, the registration, the segment list, then the first byte);
- ours warm: one leaf path changed (a new toplevel), image ready again.
Targets: cold <= reference; warm < 0.5 s; first byte < 100 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from appliance.nix.command import Nix
from appliance.nix.netboot import CpioCache, ImageBuilder, nix_closure, nix_dump_db

CACHE = Path(os.environ.get("NIXIE_BENCH_CACHE", "/var/cache/nixie-bench/netboot"))
NIX_EXTRA = "build-users-group =\nsandbox = false\nsubstituters =\nmax-jobs = auto"
SEED = 20261122
BLOCK = 64 * 1024


def make_pool(path: Path, size: int) -> None:
    """Deterministic data: a third random, a third 4-bit symbols, a third text-like."""
    if path.exists() and path.stat().st_size == size:
        return
    rng = random.Random(SEED)
    nibbles = bytes.maketrans(bytes(range(256)), bytes(b"abcdefghijklmnop"[i % 16] for i in range(256)))
    words = [b"nix", b"store", b"lib", b"share", b"bin", b"\x00\x00\x00\x00", b"ELF", b"x86_64",
             b"linux", b"GLIBC_2.34", b"\n", b"    ", b"return", b"static"]
    vocab = words + [rng.randbytes(4) for _ in range(2048)]
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        written, i = 0, 0
        while written < size:
            n = min(1 << 20, size - written)
            kind = i % 3
            if kind == 0:
                chunk = rng.randbytes(n)
            elif kind == 1:
                chunk = rng.randbytes(n).translate(nibbles)
            else:
                chunk = b"".join(rng.choices(vocab, k=n // 3 + 16))[:n]
            assert len(chunk) == n
            f.write(chunk)
            written += n
            i += 1
    os.replace(tmp, path)


def leaf_index(n_paths: int) -> int:
    """The path the warm run changes; nothing else references it."""
    return n_paths * 3 // 4


def plan(n_paths: int, total: int) -> list[dict]:
    """File sizes per path (multiples of 64 KiB), offsets into the pool, references."""
    rng = random.Random(SEED + 1)
    leaf = leaf_index(n_paths)
    weights = []
    for i in range(n_paths):
        files = [rng.lognormvariate(0, 1.3) for _ in range(rng.randrange(1, 6))]
        if i % 50 == 7:  # a few big ones (the libraries, the kernel modules)
            files[0] *= 40
        weights.append(files)
    scale = total / sum(sum(w) for w in weights)
    specs, off = [], 0
    for i, files in enumerate(weights):
        sizes = [max(1, round(w * scale / BLOCK)) for w in files]
        entries = []
        for s in sizes:
            entries.append((off, s))
            off += s
        deps = sorted({rng.randrange(0, i) for _ in range(rng.randrange(0, 4))}) if i >= 1 else []
        specs.append({"files": entries, "deps": [d for d in deps if d != leaf]})
    return specs


def write_expr(d: Path, specs: list[dict], pool: Path) -> Path:
    leaf = leaf_index(len(specs))
    lines = ["{ variant ? \"0\" }:", "let",
             '  system = "x86_64-linux";',
             f'  bb = builtins.path {{ path = {d}/bbdir; name = "busybox"; }};',
             "  mk = i: files: deps: derivation {",
             '    name = "synthetic-${toString i}";',
             "    inherit system;",
             '    builder = "${bb}/bin/busybox";',
             '    args = [ "sh" "-e" "-c" (',
             '      "${bb}/bin/busybox mkdir -p $out/lib $out/share\\n"',
             '      + builtins.concatStringsSep "" (builtins.genList (j: let f = builtins.elemAt files j; in',
             f'          "${{bb}}/bin/busybox dd if={pool} of=$out/lib/f${{toString j}} bs={BLOCK} "',
             '          + "skip=${toString (builtins.elemAt f 0)} count=${toString (builtins.elemAt f 1)} 2>/dev/null\\n")',
             "          (builtins.length files))",
             '      + "echo \'${builtins.concatStringsSep " " deps}\' > $out/share/deps\\n"',
             f'      + (if i == {leaf} then "echo ${{variant}} > $out/share/variant\\n" else "")',
             "    ) ];",
             "  };",
             "  specs = ["]
    for s in specs:
        files = " ".join(f"[ {o} {n} ]" for o, n in s["files"])
        deps = " ".join(str(x) for x in s["deps"])
        lines.append(f"    {{ files = [ {files} ]; deps = [ {deps} ]; }}")
    lines += ["  ];",
              "  paths = builtins.genList (i: let s = builtins.elemAt specs i; in",
              "    mk i s.files (map (j: builtins.elemAt paths j) s.deps)) (builtins.length specs);",
              "in derivation {",
              '  name = "bench-system";',
              "  inherit system;",
              '  builder = "${bb}/bin/busybox";',
              '  args = [ "sh" "-e" "-c" ("${bb}/bin/busybox mkdir $out\\n"',
              '    + "echo stage1 > $out/initrd\\necho kernel > $out/kernel\\n"',
              '    + "echo \'${builtins.concatStringsSep " " paths}\' > $out/closure\\n") ];',
              "}"]
    expr = d / "default.nix"
    expr.write_text("\n".join(lines) + "\n")
    return expr


def build(nix: Nix, expr: Path, variant: str, link: Path | None) -> str:
    args = ["nix-build", str(expr), "--argstr", "variant", variant]
    args += ["--out-link", str(link)] if link else ["--no-out-link"]
    return nix.run(args, timeout=3600).split()[-1]


def reference_pipe(closure: list[str], out: Path) -> float:
    rel = " ".join(p.lstrip("/") for p in closure)
    t0 = time.perf_counter()
    subprocess.run(f"cd / && find {rel} | cpio -o -H newc --quiet | zstd -T0 -q -c > {out}",
                   shell=True, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", type=int, default=500)
    ap.add_argument("--bytes", type=int, default=1 << 30)
    ap.add_argument("--level", type=int, default=1, help="ours (netboot.zstd_level)")
    a = ap.parse_args()
    nix = Nix(extra_config=NIX_EXTRA)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "bbdir" / "bin").mkdir(parents=True, exist_ok=True)
    if not (CACHE / "bbdir/bin/busybox").exists():
        shutil.copyfile("/bin/busybox", CACHE / "bbdir/bin/busybox")
        os.chmod(CACHE / "bbdir/bin/busybox", 0o755)
    t = time.perf_counter()
    make_pool(CACHE / "pool.bin", a.bytes)
    specs = plan(a.paths, a.bytes)
    expr = write_expr(CACHE, specs, CACHE / "pool.bin")
    top = build(nix, expr, "0", CACHE / "result")
    closure = sorted(nix.run(["nix-store", "-qR", top]).split())
    size = sum(sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) for p in closure)
    print(f"closure: {len(closure)} store paths, {size / 1e9:.2f} GB "
          f"(ready in {time.perf_counter() - t:.1f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="nixie-bench-", dir=CACHE) as tmp:
        tmp = Path(tmp)
        for p in closure:  # the page cache warmed once, for both sides
            subprocess.run(f"cat $(find {p} -type f) > /dev/null", shell=True)
        load0 = os.getloadavg()[0]
        ref = reference_pipe(closure, tmp / "ref.cpio.zst")
        ref_size = (tmp / "ref.cpio.zst").stat().st_size

        colds = {}
        for level in sorted({a.level, 3}):
            cache = CpioCache(tmp / f"cache{level}", level=level)
            images = ImageBuilder(cache, closure=nix_closure(nix), dump_db=nix_dump_db(nix))
            t0 = time.perf_counter()
            art = images.initrd(top)
            colds[level] = (time.perf_counter() - t0, art.size, sum(cache.built.values()))
            if level != a.level:
                cache.close()
                continue
            ours = (cache, images)
        cache, images = ours
        cold, cold_bytes, built_cold = colds[a.level]

        # time to first byte of a cached image, as a fresh request would see it
        fresh = ImageBuilder(cache, closure=nix_closure(nix), dump_db=nix_dump_db(nix))
        t0 = time.perf_counter()
        art2 = fresh.initrd(top)
        with open(art2.segments[0].path, "rb") as f:
            f.read(1)
        ttfb = time.perf_counter() - t0

        variant = f"warm-{time.time_ns()}"
        new_top = build(nix, expr, variant, None)
        t0 = time.perf_counter()
        art3 = images.initrd(new_top)
        warm = time.perf_counter() - t0
        built_warm = sum(cache.built.values()) - built_cold
        cache.close()
        load1 = os.getloadavg()[0]

    result = {
        "paths": len(closure), "closure_bytes": size, "zstd_level": a.level,
        "reference_seconds": round(ref, 3), "reference_bytes": ref_size,
        "cold_seconds": round(cold, 3), "cold_bytes": cold_bytes, "archives_built_cold": built_cold,
        "cold_seconds_level3": round(colds[3][0], 3), "cold_bytes_level3": colds[3][1],
        "first_byte_seconds": round(ttfb, 4),
        "warm_seconds": round(warm, 3), "archives_built_warm": built_warm, "warm_bytes": art3.size,
        "load_average": [round(load0, 1), round(load1, 1)],
    }
    print(f"machine load average {load0:.1f} -> {load1:.1f} on {os.cpu_count()} CPUs "
          "(other work shares them; both sides ran under it)")
    print(f"reference (find | cpio -o -H newc | zstd -T0, level 3): {ref:7.2f} s  {ref_size / 1e6:8.1f} MB")
    for level, (secs, nbytes, built) in sorted(colds.items()):
        print(f"ours cold, zstd level {level} ({built} archives, empty cache): {secs:7.2f} s  "
              f"{nbytes / 1e6:8.1f} MB   ratio ref/ours {ref / secs:.2f}x")
    print(f"ours first byte, cached image:                  {ttfb * 1000:7.1f} ms")
    print(f"ours warm (one path changed, level {a.level}):          {warm:7.3f} s  "
          f"{built_warm} archives rebuilt   ratio ref/ours {ref / warm:.0f}x")
    ok = cold <= ref and warm < 0.5 and ttfb < 0.1
    print("targets (cold <= reference, warm < 0.5 s, first byte < 100 ms): "
          + ("met" if ok else "NOT met"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
