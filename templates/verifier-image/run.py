"""uv / uvx stand-ins of the git-harness verifier image.

The image was built with the packages a verifier asks for (`git harness image verifier`), from
wheels downloaded on the host. `uvx -p X -w PKG==V TOOL ARGS` and `uv run ...` run TOOL with the
image's Python and those packages; `uv pip install SPEC` checks that SPEC is there; nothing is
downloaded. A package that is not in the image is an error that names the remedy.
"""

import os
import re
import sys
from importlib import metadata

HERE = os.path.dirname(os.path.abspath(__file__))
SITE = os.path.join(HERE, "site")
ME = "git-harness verifier image"

# Options that take a value, and flags, of `uvx` / `uv run` that change nothing here.
VALUED = {"-p", "--python", "-w", "--with", "--from", "--index-url", "--extra-index-url",
          "--default-index", "--index", "--cache-dir", "--directory", "--project"}
FLAGS = {"-q", "--quiet", "-v", "--verbose", "--offline", "--no-cache", "--isolated", "-n",
         "--refresh", "--no-progress", "--native-tls", "--no-project", "--no-sync",
         "--frozen", "--locked", "--active", "--system"}


def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def installed():
    out = {}
    for d in metadata.distributions(path=[SITE]):
        out[norm(d.metadata["Name"])] = d
    return out


def fail(msg, code=2):
    print(f"{ME}: {msg}", file=sys.stderr)
    sys.exit(code)


def check(specs, prog):
    have = installed()
    for spec in specs:
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==\s*([^\s;]+))?", part)
            if not m:
                fail(f"{prog}: cannot read the requirement `{part}`")
            name, want = norm(m.group(1)), m.group(4)
            d = have.get(name)
            if d is None or (want is not None and d.version != want):
                has = f" (it has {name}=={d.version})" if d is not None else ""
                fail(f"{prog}: {part} is not in this image{has}; rebuild it with "
                     f"`git harness image verifier --with {part}`")


def run_tool(tool, args):
    os.environ["PYTHONPATH"] = SITE + (os.pathsep + os.environ["PYTHONPATH"]
                                       if os.environ.get("PYTHONPATH") else "")
    if tool in ("python", "python3") or re.match(r"^python3\.\d+$", tool):
        os.execv(sys.executable, [sys.executable] + args)
    sys.path.insert(0, SITE)
    for d in installed().values():
        for ep in d.entry_points:
            if ep.group == "console_scripts" and ep.name == tool:
                sys.argv = [tool] + args
                sys.exit(ep.load()())
    # Not a tool of the installed packages: a command of the image.
    try:
        os.execvp(tool, [tool] + args)
    except OSError as e:
        fail(f"`{tool}` is neither a tool of the packages in this image nor a command: {e}", 127)


def parse_run(prog, args):
    """Options before the command: collect `--with`, skip what changes nothing here."""
    specs = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break
        key, eq, val = a.partition("=")
        if key in VALUED:
            if not eq:
                i += 1
                if i >= len(args):
                    fail(f"{prog}: {a} needs a value")
                val = args[i]
            if key in ("-w", "--with", "--from"):
                specs.append(val)
        elif a not in FLAGS:
            fail(f"{prog}: option {a} is not supported by this stand-in")
        i += 1
    if i >= len(args):
        fail(f"{prog}: no command given")
    return specs, args[i], args[i + 1:]


def uv(args):
    if not args or args[0] in ("--version", "-V", "version", "self"):
        print(f"uv (stand-in of the {ME})")
        return 0
    cmd, rest = args[0], args[1:]
    if cmd == "run":
        specs, tool, targs = parse_run("uv run", rest)
        check(specs, "uv run")
        run_tool(tool, targs)
    if cmd == "pip" and rest[:1] == ["install"]:
        specs = [a for a in rest[1:] if not a.startswith("-")]
        if any(a in ("-r", "--requirement", "-e", "--editable") for a in rest[1:]):
            fail("uv pip install: requirement files and editable installs are not supported here")
        check(specs, "uv pip install")
        return 0
    if cmd == "venv":
        path = next((a for a in rest if not a.startswith("-")), ".venv")
        os.makedirs(os.path.join(path, "bin"), exist_ok=True)
        with open(os.path.join(path, "bin", "activate"), "w") as f:
            f.write(f"# {ME}: the packages are the image's; nothing to activate\n"
                    f"VIRTUAL_ENV={os.path.abspath(path)}\nexport VIRTUAL_ENV\n")
        return 0
    if cmd == "tool" and rest[:1] == ["run"]:
        return uvx(rest[1:])
    fail(f"uv {cmd}: not supported by this stand-in (run, pip install, venv, tool run)")


def uvx(args):
    if args[:1] in (["--version"], ["-V"]):
        print(f"uvx (stand-in of the {ME})")
        return 0
    specs, tool, targs = parse_run("uvx", args)
    # `uvx --from PKG tool` and `uvx tool@version`: the tool's package must be there too.
    name, _, version = tool.partition("@")
    if version:
        specs.append(f"{name}=={version}")
    check(specs, "uvx")
    run_tool(name, targs)


def main():
    if sys.argv[1:2] == ["--list"]:
        for name, d in sorted(installed().items()):
            print(f"{name}=={d.version}")
        return 0
    prog, args = sys.argv[1], sys.argv[2:]
    return uv(args) if prog == "uv" else uvx(args)


if __name__ == "__main__":
    sys.exit(main())
