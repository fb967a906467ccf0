"""`nixie completion bash|zsh`: a shell completion script made from `nixie`'s own
argument parser, so every verb, sub-verb and option a module registers completes
without a list kept by hand. zsh runs the same script through `bashcompinit`."""

from __future__ import annotations

import argparse
import shlex

from appliance.cli.context import Ctx
from appliance.cli.parser import Subparsers, leaf

FILE_METAVARS = {"FILE", "PATH", "DIR"}


def walk(p: argparse.ArgumentParser, path: tuple[str, ...] = ()
         ) -> dict[tuple[str, ...], tuple[list[str], list[str]]]:
    """Each command path (() for `nixie` itself) → (its sub-verbs, its options)."""
    subs: list[str] = []
    opts: list[str] = []
    out: dict[tuple[str, ...], tuple[list[str], list[str]]] = {}
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                subs.append(name)
                out.update(walk(child, (*path, name)))
        else:
            opts.extend(o for o in a.option_strings if o.startswith("--"))
    out[path] = (subs, sorted(set(opts)))
    return out


def valued_options(p: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """(options that take a value, those whose value is a file), over the whole tree."""
    takes, files = set(), set()
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for child in a.choices.values():
                t, f = valued_options(child)
                takes |= t
                files |= f
        elif a.option_strings and a.nargs != 0:
            takes.update(a.option_strings)
            if (a.metavar or "").upper() in FILE_METAVARS or a.dest in {"config", "output"}:
                files.update(a.option_strings)
    return takes, files


def bash_script(p: argparse.ArgumentParser) -> str:
    tree = walk(p)
    takes, files = valued_options(p)
    q = shlex.quote
    lines = ["# nixie shell completion (made by `nixie completion bash`)",
             "declare -gA _nixie_subs _nixie_opts"]
    for path, (subs, opts) in sorted(tree.items()):
        key = q(" ".join(("nixie", *path)))  # bash allows no empty key
        lines.append(f"_nixie_subs[{key}]={q(' '.join(subs))}")
        lines.append(f"_nixie_opts[{key}]={q(' '.join(opts))}")
    lines.append(f"_nixie_valued={q(' ' + ' '.join(sorted(takes)) + ' ')}")
    lines.append(f"_nixie_files={q(' ' + ' '.join(sorted(files)) + ' ')}")
    lines.append(r'''_nixie() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="" path=nixie w i skip=0
    (( COMP_CWORD > 0 )) && prev="${COMP_WORDS[COMP_CWORD-1]}"
    for (( i = 1; i < COMP_CWORD; i++ )); do
        w="${COMP_WORDS[i]}"
        if (( skip )); then skip=0; continue; fi
        if [[ "$_nixie_valued" == *" $w "* ]]; then skip=1; continue; fi
        if [[ " ${_nixie_subs[$path]} " == *" $w "* ]]; then
            path="$path $w"
        fi
    done
    if [[ "$_nixie_files" == *" $prev "* ]]; then
        COMPREPLY=( $(compgen -f -- "$cur") ); return 0
    fi
    if [[ "$_nixie_valued" == *" $prev "* ]]; then
        COMPREPLY=(); return 0
    fi
    if [[ "$cur" == -* ]]; then
        COMPREPLY=( $(compgen -W "${_nixie_opts[$path]} --help" -- "$cur") )
    else
        COMPREPLY=( $(compgen -W "${_nixie_subs[$path]}" -- "$cur") )
    fi
    return 0
}
complete -F _nixie nixie''')
    return "\n".join(lines) + "\n"


def zsh_script(p: argparse.ArgumentParser) -> str:
    return ("#compdef nixie\n# nixie shell completion (made by `nixie completion zsh`)\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(p))


def cmd_completion(ctx: Ctx) -> int:
    make = bash_script if ctx.args.shell == "bash" else zsh_script
    print(make(ctx.args.root_parser), end="")
    return 0


def register(sub: Subparsers) -> None:
    s = leaf(sub, "completion", cmd_completion,
             "print a shell completion script: `source <(nixie completion bash)`, or in "
             "~/.zshrc `source <(nixie completion zsh)`", parents=())
    s.add_argument("shell", choices=("bash", "zsh"))
