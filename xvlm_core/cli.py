"""The `xvlm` command: ask, chat, serve, bench, download."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from xvlm_core.errors import Problem, Remedy, XvlmError, known_error
from xvlm_core.precisions import ENGINE_CHOICES, QUANTIZE_CHOICES, WEIGHTS_LABELS

if TYPE_CHECKING:
    from xvlm_core.hub import DownloadProgress

DEFAULT_MODEL = "XiaoduoAILab/Xmodel_VLM"
log = logging.getLogger("xvlm")

# What to do about a core error, in this command's options (the window says it with its settings).
ADVICE = {
    Remedy.DOWNLOAD_MODEL: "Run: xvlm download {repo_id}",
    Remedy.CHOOSE_VISION_TOWER: "Pass its folder with --vision-tower.",
    Remedy.FREE_MEMORY: "Close other programs, or try --quantize int8, a smaller --dtype or --device cpu.",
    Remedy.SHORTEN_CONVERSATION: "Shorten it or start a new chat.",
}
DOWNLOAD_OR_FOLDER = "Run: xvlm download {repo_id}, or pass its folder with --vision-tower."


def said(problem: Problem) -> str:
    """A core error's English details with the advice for this command's options."""
    advice = ADVICE.get(problem.code, "")
    if problem.code is Remedy.CHOOSE_VISION_TOWER and problem.repo_id:
        advice = DOWNLOAD_OR_FOLDER
    return f"{problem.details} {advice.format(repo_id=problem.repo_id)}".strip()


def _model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default=DEFAULT_MODEL, help="checkpoint folder or hub repo id (default: %(default)s)"
    )
    parser.add_argument("--vision-tower", help="vision tower folder or hub repo id (default: from the checkpoint)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto, float32, float16 or bfloat16 (default: auto)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        default="none",
        help="int8: 8-bit weights for the language model, faster and half the memory; int4: 4-bit weights, "
        "faster still and about a third of the memory; answers may differ (default: none, the exact weights)",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINE_CHOICES,
        default="auto",
        help="what runs the language model: pytorch, or llama.cpp (CPU only, faster decode; needs the 'llamacpp' "
        "extra; its 8- and 4-bit weights are llama.cpp's Q8_0 and Q4_K_M); auto: llama.cpp on the CPU where it is "
        "installed, else pytorch (default: %(default)s)",
    )


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    from xvlm_core.sampling import SamplingSettings  # torch-free

    defaults = SamplingSettings()
    parser.add_argument("--system", help="system prompt (default: the model's own)")
    parser.add_argument("--max-new-tokens", type=int, default=defaults.max_new_tokens, metavar="N")
    parser.add_argument("--temperature", type=float, default=defaults.temperature, metavar="T",
                        help="0 (default) is greedy")
    parser.add_argument("--top-p", type=float, default=defaults.top_p, metavar="P")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, metavar="K")
    parser.add_argument("--repetition-penalty", type=float, default=defaults.repetition_penalty, metavar="R")
    parser.add_argument("--seed", type=int, default=defaults.seed, metavar="N")


def _port(text: str) -> int:
    port = _whole_number(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port: give a number from 1 to 65535, or 0 for a free one")
    return port


def _at_least_one(text: str) -> int:
    number = _whole_number(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"give a whole number of at least 1, not {number}")
    return number


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _client_counts(text: str) -> list[int]:
    """`1,4,8,16` -> [1, 4, 8, 16]: the numbers of concurrent clients, each from 1 to 256."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or not all(1 <= count <= 256 for count in counts):
        raise argparse.ArgumentTypeError(f"give numbers from 1 to 256 separated by commas, such as 1,4,8,16, "
                                         f"not {text!r}")
    return counts


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, not {text!r}")
    return seconds


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xvlm", description="Ask the Xmodel-VLM model about images.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ask = commands.add_parser("ask", help="answer one question (streams to stdout)")
    _model_options(ask)
    _sampling_options(ask)
    ask.add_argument("--image", type=Path, action="append", default=[],
                     help="image file for the question; repeat it for several, in order")
    ask.add_argument("--conversation", type=Path, metavar="FILE.json", help="earlier turns (JSON list of messages)")
    ask.add_argument("--json", action="store_true", help="print one JSON object with prompt, ids, text and stats")
    ask.add_argument("prompt", metavar="PROMPT")
    ask.set_defaults(run=cmd_ask)

    chat = commands.add_parser("chat", help="interactive multi-turn chat in the terminal")
    _model_options(chat)
    _sampling_options(chat)
    chat.add_argument("--image", type=Path, action="append", default=[],
                      help="image to talk about; repeat it for several")
    chat.set_defaults(run=cmd_chat)

    serve = commands.add_parser("serve", help="serve the model over an OpenAI-compatible HTTP API")
    _model_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s: this machine)")
    serve.add_argument("--port", type=_port, default=8000, help="port; 0 picks a free one (default: %(default)s)")
    serve.add_argument(
        "--api-key",
        default=os.environ.get("XVLM_API_KEY") or None,
        help="key clients must send as 'Authorization: Bearer KEY' (default: $XVLM_API_KEY, else none)",
    )
    serve.add_argument(
        "--insecure-no-key", action="store_true", help="allow listening beyond this machine without an API key"
    )
    serve.add_argument(
        "--allow-remote-images",
        action="store_true",
        help="also fetch images from http(s) URLs (by default only data: URLs are accepted)",
    )
    serve.add_argument(
        "--max-waiting", type=_at_least_one, default=16, metavar="N",
        help="requests that may wait behind the one being answered; more get HTTP 429 (default: %(default)s)",
    )
    serve.add_argument(
        "--request-timeout", type=_seconds, default=300.0, metavar="SECONDS",
        help="longest a request may take from arrival, its upload included, to its last token; longer gets HTTP 408 "
        "while uploading, else 503 (default: %(default)s)",
    )
    serve.set_defaults(run=cmd_serve)

    bench = commands.add_parser("bench", help="measure load time, time to first token and decode speed")
    _model_options(bench)
    bench.add_argument(
        "--synthetic",
        action="store_true",
        help="use a random checkpoint with the real model's full size (built once, then cached)",
    )
    bench.add_argument(
        "--baseline",
        action="store_true",
        help="also time plain transformers in a process of its own (generate, prompt recomputed each turn)",
    )
    bench.add_argument("--turns", type=int, default=5, help="turns in the conversation (default: %(default)s)")
    bench.add_argument("--new-tokens", type=int, default=32, help="tokens generated per turn (default: %(default)s)")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    bench.add_argument("--server", metavar="URL",
                       help="measure this OpenAI-compatible server (http://HOST:PORT/v1) under concurrent clients "
                       "instead of a model here")
    bench.add_argument("--clients", type=_client_counts, default="1,4,8,16", metavar="N,N,...",
                       help="with --server: concurrent clients at each level (default: %(default)s)")
    bench.add_argument("--server-model", default="", metavar="NAME",
                       help="with --server: the model to ask (default: the first the server lists)")
    bench.add_argument("--api-key", default=os.environ.get("XVLM_API_KEY", ""),
                       help="with --server: the key to send (default: $XVLM_API_KEY, else none)")
    bench.add_argument("--time-limit", type=_seconds, default=600.0, metavar="SECONDS",
                       help="with --server: the longest one request may take (default: %(default)s)")
    bench.set_defaults(run=cmd_bench)

    download = commands.add_parser("download", help="download a model and its vision tower into the hub cache")
    download.add_argument("model", nargs="?", help="hub repo id (default: the app's default model)")
    download.add_argument("--local-dir", type=Path, help="put the files in this folder instead of the hub cache")
    download.add_argument("--revision", help="branch, tag or commit (default: main)")
    download.add_argument("--endpoint", help="hub endpoint or mirror URL (default: $HF_ENDPOINT or the hub)")
    download.set_defaults(run=cmd_download)
    return parser


def _settings(args: argparse.Namespace):
    from xvlm_core.sampling import SamplingSettings

    return SamplingSettings(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        repetition_penalty=args.repetition_penalty,
        seed=args.seed,
    )


def _load(args: argparse.Namespace):
    from xvlm_core.engines.choice import load_on_engine

    def on_stage(text: str) -> None:
        log.info(text)

    return load_on_engine(
        args.model,
        vision_tower=args.vision_tower,
        device=args.device,
        dtype=args.dtype,
        on_stage=on_stage,
        quantize=args.quantize,
        engine=args.engine,
    )


def cmd_ask(args: argparse.Namespace) -> int:
    from xvlm_core.engines.pytorch.session import ChatSession
    from xvlm_core.messages import Message
    from xvlm_core.model.prompt import SYSTEM_V1, read_conversation

    settings = _settings(args)
    history = []
    if args.conversation:
        # Image names in the file are relative to it (absolute ones stay as they are).
        folder = args.conversation.parent
        history = [Message(m.role, m.text, tuple(_image_ref(folder / name) for name in m.images))
                   for m in read_conversation(args.conversation)]
    # A bad image fails before the model loads.
    question = Message("user", args.prompt, tuple(_image_ref(path) for path in args.image))
    loaded = _load(args)
    answer = ChatSession(loaded).answer([*history, question], settings, system=args.system or SYSTEM_V1)
    if args.json:
        for _ in answer:
            pass
        result = answer.result
        print(json.dumps({
            "prompt": result.prompt,
            "input_ids": result.input_ids,
            "output_ids": result.output_ids,
            "text": result.text,
            "stats": {**result.stats.as_dict(), "load_s": loaded.load_s},
        }, ensure_ascii=False))
        return 0
    for delta in answer:
        sys.stdout.write(delta)
        sys.stdout.flush()
    sys.stdout.write("\n")
    log.info("%s", _stats_line(answer.result.stats.as_dict()))
    return 0


def _image_ref(path: Path):
    """An image from the command line, checked and hashed once here, at the edge."""
    from xvlm_core.messages import ImageRef
    from xvlm_core.model.images import load_image

    load_image(path)
    return ImageRef.from_file(path)


def _stats_line(stats: dict) -> str:
    return (
        f"{stats['output_tokens']} tokens, first after {stats['ttft_s']:.2f} s, "
        f"{stats['decode_tok_s']:.1f} tokens/s ({stats['stop_reason']})"
    )


def cmd_chat(args: argparse.Namespace) -> int:
    from xvlm_core.engines.pytorch.session import ChatSession
    from xvlm_core.messages import ImageRef, Message
    from xvlm_core.model.prompt import SYSTEM_V1

    settings = _settings(args)
    pending: list[ImageRef] = [_image_ref(path) for path in args.image]
    loaded = _load(args)
    session = ChatSession(loaded)
    messages: list[Message] = []
    summary = loaded.summary()
    weights = f", {WEIGHTS_LABELS[loaded.quantize]}" if loaded.quantize in WEIGHTS_LABELS else ""
    print(f"Chatting with {loaded.name} on {summary['device']} ({summary['dtype']}{weights}).")
    print(
        "Commands: /image FILE attaches an image to your next message (repeat it for several), /new starts over, "
        "/quit leaves. Ctrl+C stops an answer."
    )
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        command, _, argument = line.partition(" ")
        if command in ("/quit", "/exit"):
            return 0
        if command == "/new":
            messages, pending = [], []
            print("(new chat)")
            continue
        if command == "/image":
            candidate = argument.strip()
            try:
                pending.append(_image_ref(Path(candidate)))
            except XvlmError as exc:
                print(f"error: {said(exc.problem)}")
                continue
            print(f"(attached {candidate})")
            continue
        if line.startswith("//"):
            line = line[1:]  # a message that begins with "/": written "//..."
        elif line.startswith("/"):
            print(f"error: there is no command {command}; the commands are /image FILE, /new and /quit. "
                  "To send a message that begins with /, write // instead.")
            continue
        messages.append(Message("user", line, tuple(pending)))
        pending = []
        cancel = threading.Event()
        try:
            answer = session.answer(messages, settings, system=args.system or SYSTEM_V1, cancel=cancel)
            sys.stdout.write("model> ")
            _stream_to_stdout(answer, cancel)
        except XvlmError as exc:
            messages.pop()
            print(f"\nerror: {said(exc.problem)}")
            continue
        print()
        messages.append(Message("assistant", answer.result.text))


def _stream_to_stdout(answer, cancel: threading.Event) -> None:
    """Print the answer as it comes; Ctrl+C stops it at the next token, keeping what was said."""
    previous = signal.signal(signal.SIGINT, lambda _signum, _frame: cancel.set())
    try:
        for delta in answer:
            sys.stdout.write(delta)
            sys.stdout.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
    if answer.result.stats.stop_reason == "cancelled":
        sys.stdout.write(" [stopped]")


def cmd_serve(args: argparse.Namespace) -> int:
    from xvlm_core.openai_compat.server import ServerOptions, is_loopback, serve

    if not is_loopback(args.host) and not args.api_key and not args.insecure_no_key:
        raise XvlmError(
            f"--host {args.host} lets other machines reach the model: give --api-key KEY (or set XVLM_API_KEY), "
            "or --insecure-no-key to serve anyone who can reach this address."
        )
    _log_with_timestamps()
    options = ServerOptions(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        allow_remote_images=args.allow_remote_images,
        max_waiting=args.max_waiting,
        request_timeout_s=args.request_timeout,
    )
    loaded = _load(args)
    # Ctrl+C is how a server is stopped; uvicorn re-raises it once the server has shut down cleanly.
    with contextlib.suppress(KeyboardInterrupt):
        serve(loaded, options)
    log.info("Stopped.")
    return 0


def _log_with_timestamps() -> None:
    """A server's log is read later and by others: each record gets a time, and outside text is escaped."""
    from xvlm_core.log_lines import LogFormatter

    for handler in logging.getLogger().handlers:
        handler.setFormatter(LogFormatter())


def cmd_bench(args: argparse.Namespace) -> int:
    if args.server:
        return cmd_bench_server(args)
    from xvlm_core.bench.local import run_benchmark

    result = run_benchmark(
        model=None if args.synthetic else args.model,
        vision_tower=args.vision_tower,
        device=args.device,
        dtype=args.dtype,
        turns=args.turns,
        new_tokens=args.new_tokens,
        baseline=args.baseline,
        quantize=args.quantize,
        engine=args.engine,
    )
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    return 0


def cmd_bench_server(args: argparse.Namespace) -> int:
    from xvlm_core.bench.serving import Server, run_server_benchmark

    server = Server(args.server, args.api_key, args.time_limit)
    result = run_server_benchmark(server, args.clients, args.new_tokens, args.server_model)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['model']} at {result['server']}, {result['max_tokens']} tokens per answer")
    for level in result["levels"]:
        print(" ".join(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in level.items()))
    return 0


class _DownloadBar:
    """Download progress: one `\\r`-updated line on a terminal, a plain line every 10% when output is redirected."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.tty = stream.isatty()
        self.step = -1
        self.shown = 0  # length of the line now on the terminal

    def __call__(self, progress: DownloadProgress) -> None:
        from xvlm_core.hub import format_duration, format_size

        percent = 100 * progress.done_bytes / progress.total_bytes if progress.total_bytes else 100.0
        eta = "--" if progress.eta_s is None else format_duration(progress.eta_s)
        line = (
            f"{percent:5.1f}%  {format_size(progress.done_bytes)} / {format_size(progress.total_bytes)}  "
            f"{format_size(progress.speed_bps)}/s  ETA {eta}  {progress.current_file.rsplit('/', 1)[-1]}"
        )
        if self.tty:
            line = line[: shutil.get_terminal_size().columns - 1]
            self.stream.write("\r" + line.ljust(self.shown))
            self.stream.flush()
            self.shown = len(line)
        elif int(percent // 10) != self.step:
            self.step = int(percent // 10)
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def cmd_download(args: argparse.Namespace) -> int:
    from xvlm_core import hub

    spec = hub.model_spec(args.model)
    if args.revision:
        spec = spec.with_revision(args.revision)
    plan = hub.plan_download(spec, endpoint=args.endpoint, local_dir=args.local_dir)
    repos = ", ".join(dict.fromkeys(file.repo_id for file in plan.files))
    print(
        f"{spec.display_name}: {len(plan.files)} files from {repos}; {hub.format_size(plan.total_bytes)} in all, "
        f"{hub.format_size(plan.missing_bytes)} still to download."
    )
    print(f"Destination: {plan.destination} ({hub.format_size(plan.free_bytes)} free)")
    bar = _DownloadBar(sys.stdout)
    try:
        folder = hub.download_model(spec, on_progress=bar, endpoint=args.endpoint, local_dir=args.local_dir, plan=plan)
    finally:
        bar.close()
    print(f"Ready: {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s", stream=sys.stderr)
    if not args.debug:
        _quiet_libraries()
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one catch-all at the command's edge
        if args.debug:
            raise
        known = known_error(exc)  # the core's own errors, and running out of memory
        if known is not None:
            print(f"error: {said(known.problem)}", file=sys.stderr)
            return 1
        print(
            f"error: something went wrong that xvlm has no message for ({type(exc).__name__}: {exc}); "
            "run the same command with --debug to see where.",
            file=sys.stderr,
        )
        return 1


def _quiet_libraries() -> None:
    for name in ("transformers", "huggingface_hub", "httpx", "httpx2", "PIL"):
        logging.getLogger(name).setLevel(logging.ERROR)


if __name__ == "__main__":
    sys.exit(main())
