"""`stealbench serve`: a victim (trained or from the cache, as `fit` would) behind a defense, as a V2 endpoint.

Options of its own (--port, --host, --model_name, --max_batch) plus `fit`'s --data, --defense, --victim.*,
--surrogate.* (the defense's auxiliary models), --trainer.*, --seed and --budget (here: per account), parsed by
fit's own parser so that they mean the same.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from typing import Any

from ..arguments import ArgumentParser
from ..errors import ConfigError

PROG = "stealbench serve"
#: fit options that belong to the attacker's side: meaningless for a server, refused rather than ignored
_ATTACKER_OPTIONS = ("--attack", "--label_mode", "--label_options", "--pool_data", "--oracle", "--sandbox")


def serve_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG, add_help=False,
        description="Serve a victim behind a defense over the Open Inference Protocol (KServe V2 REST).",
        epilog="Also takes fit's --data, --defense (and --defense.*), --victim.*, --surrogate.*, --trainer.*, "
               "--seed and --budget (queries per account); see `stealbench fit --help`. Accounts: "
               "`Authorization: Bearer KEY` or `X-Account: NAME` (default: anonymous).")
    parser.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    parser.add_option("--port", type=int, default=8000, help="TCP port (0: pick a free one and print it)")
    parser.add_option("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_option("--model_name", default="victim", help="the model's name in /v2/models/NAME")
    parser.add_option("--max_batch", type=int, default=1024, help="most images one infer request may carry")
    parser.add_option("--upstream", default=None, metavar="URL",
                      help="a proxy: apply --defense to the probabilities this V2 endpoint returns (no local victim)")
    parser.add_option("--upstream_model", default="victim", help="the model's name at --upstream")
    parser.add_option("--upstream_key", default=None, help="API key for --upstream (Authorization: Bearer)")
    parser.add_option("--upstream_timeout", type=float, default=30.0, help="seconds per request to --upstream")
    return parser


def parse(argv: list[str]) -> tuple[Any, list[str]]:
    parser = serve_parser()
    args, rest = parser.parse_known_args(argv)
    if args.help:
        parser.print_help()
        return args, rest
    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port must be 0..65535, got {args.port}")
    if args.max_batch < 1:
        raise ConfigError(f"--max_batch must be >= 1, got {args.max_batch}")
    if not args.model_name or "/" in args.model_name or len(args.model_name) > 100:
        raise ConfigError(f"--model_name must be a non-empty name without '/', got {args.model_name!r}")
    if args.upstream is not None:
        from ..config import check_url

        args.upstream = check_url(args.upstream, "--upstream")
        if not args.upstream_timeout > 0:
            raise ConfigError(f"--upstream_timeout must be > 0, got {args.upstream_timeout}")
    for token in rest:
        name = token.split("=", 1)[0]
        if any(name == o or name.startswith(o + ".") for o in _ATTACKER_OPTIONS):
            raise ConfigError(f"{name} is an attacker's option of `stealbench fit`; `stealbench serve` serves the "
                              "defender's side only (--data, --defense, --victim.*, --budget, ...)")
    return args, rest


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle off (TCP_NODELAY) only on sockets whose proto says TCP; with
    # proto 0 every small answer waited ~40 ms for the delayed ACK of the one before
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve_main(argv: list[str]) -> int:
    args, rest = parse(argv)
    if args.help:
        return 0
    sock = bind(args.host, args.port)  # before the victim trains: a port in use fails now, not minutes later
    try:
        return _serve(args, rest, sock)
    finally:
        sock.close()


def _serve(args: Any, rest: list[str], sock: socket.socket) -> int:
    import uvicorn

    from .. import console
    from ..defender.oracle import _make_answerer
    from ..defender.victim_phase import serving_side
    from ..lightning_cli import StealbenchCLI
    from ..seeding import role_seed, seeded_globals
    from .accounts import Accounts
    from .server import build_app

    exp = StealbenchCLI(rest).experiment()
    name = exp.keys["defense"]
    if args.upstream:
        from .proxy import upstream_answerer

        make_answerer, input_shape, num_classes = upstream_answerer(args, exp.defense, repr(name))
        info = {"defense": name, "upstream": args.upstream}
    else:
        splits, defended, device = serving_side(exp)

        def make_answerer(defense):
            return _make_answerer(defended.victim_net, defense, device, repr(name))

        input_shape, num_classes = tuple(exp.data.input_shape), exp.data.num_classes
        info = {"data": exp.keys["data"], "defense": name, "victim_arch": exp.victim.arch, "seed": exp.seed}
    accounts = Accounts(exp.budget, exp.defense, make_answerer)
    app = build_app(accounts, model_name=args.model_name, input_shape=input_shape, num_classes=num_classes,
                    max_batch=args.max_batch, info=info)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(args.host):
        console.info(f"warning: serving on {console.escape(args.host)}, reachable from other machines; anyone "
                     "who can reach it can query the victim (bind 127.0.0.1 to keep it local)")

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if not self.should_exit:
                print(f"serving {args.model_name} on http://{shown}:{port}", flush=True)

    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2)
    with seeded_globals(role_seed(exp.seed, "oracle")):  # randomised defenses answer from this stream
        Server(config).run(sockets=[sock])
    print(f"stopped serving {args.model_name}", file=sys.stderr)
    return 0
