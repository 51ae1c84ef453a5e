"""The options of `loadgen sweep` and `loadgen locust` beyond one run's: the points and search of a sweep, and
Locust's own runner, declared like RunConfig's sections (one kind, help and flag per field)."""

from __future__ import annotations

from dataclasses import dataclass

from loadgen.config import kinds as k
from loadgen.config.fields import Section, option
from loadgen.config.kinds import ConfigError
from loadgen.pace import RATE_TOLERANCE


@dataclass(frozen=True)
class SweepConfig(Section):
    """Load points run one after another against one server, or the search for the highest QPS meeting an SLO.
    Each point runs as a copy of the RunConfig with its own load (see loadgen.cli.sweep)."""

    qps: tuple[float, ...] | None = option(None, k.number_list(k.positive_float), scenario="load_points.qps",
                                           help="open-loop points, requests/s, e.g. 1,2,4,8")
    concurrency: tuple[int, ...] | None = option(None, k.number_list(k.positive_int),
                                                 scenario="load_points.concurrency",
                                                 help="closed-loop points, users, e.g. 1,4,16,64")
    until_slo: dict[str, float] | None = option(None, k.slo, metavar="SLO",
                                                help="find the highest QPS meeting this SLO, e.g. ttft:1s or "
                                                     "ttft:1s,tpot:100ms")
    slo_fraction: float = option(0.9, k.positive_float, help="a point meets the SLO when this fraction of requests "
                                                             "meet it (default 0.9)")
    start_qps: float = option(1.0, k.positive_float, help="first QPS the search tries (default 1)")
    max_qps: float = option(1024.0, k.positive_float, help="highest QPS the search tries (default 1024)")
    precision: float = option(0.05, k.positive_float, help="stop when the bracket is narrower than this, relative "
                                                           "(default 0.05)")
    rate_tolerance: float = option(RATE_TOLERANCE, k.positive_float,
                                   help="a point meets the SLO only if the server kept up: completed at least 1 minus "
                                        "this of the rate at which requests arrived, its queue not growing (default "
                                        f"{RATE_TOLERANCE:g})")

    def check(self) -> None:
        if self.until_slo:
            if self.qps or self.concurrency:
                raise ConfigError("--until-slo searches QPS itself; drop --qps/--concurrency points")
            if not 0 < self.slo_fraction <= 1:
                raise ConfigError("--slo-fraction must be in (0, 1], e.g. 0.9", "slo_fraction")
        elif not self.qps and not self.concurrency:
            raise ConfigError("give points to sweep: --qps 1,2,4,8 or --concurrency 1,4,16,64, or --until-slo ttft:1s")
        if not 0 < self.rate_tolerance < 1:
            raise ConfigError("--rate-tolerance must be in (0, 1), e.g. 0.05", "rate_tolerance")
        names = [point_name(q, c) for q, c in self.points()]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:  # two points would write one directory: the later summary would include the earlier records
            raise ConfigError(f"sweep points must differ: {', '.join(repeated)} is given more than once (values that "
                              "print the same name one directory); drop the repeats",
                              "qps" if repeated[0].startswith("qps") else "concurrency")

    @property
    def until_slo_text(self) -> str | None:
        return k.show_slo(self.until_slo) if self.until_slo else None

    def points(self) -> list[tuple[float | None, int | None]]:
        """The listed points as (qps, concurrency): the open-loop points, then the closed-loop ones, each in the
        order given. Both kinds in one sweep share one launch of the server (the paper's matrix has both)."""
        return [(float(q), None) for q in self.qps or ()] + [(None, int(c)) for c in self.concurrency or ()]


def point_name(qps: float | None, concurrency: int | None) -> str:
    """A sweep point's directory and its name in messages."""
    return f"qps-{qps:g}" if qps is not None else f"concurrency-{concurrency}"


@dataclass(frozen=True)
class LocustConfig(Section):
    """Locust's runner: web UI or headless, master and workers. Users and run time are the RunConfig's
    --concurrency and --duration."""

    headless: bool = option(False, k.switch, action="switch", help="no web UI; needs --concurrency and --duration")
    spawn_rate: float | None = option(None, k.positive_float, help="users started per second")
    web_host: str = option("127.0.0.1", k.text, help="web UI address (default 127.0.0.1)")
    web_port: int = option(8089, k.port, help="web UI port (default 8089)")
    master: bool = option(False, k.switch, action="switch", help="run as Locust master (workers connect to it)")
    worker: bool = option(False, k.switch, action="switch", help="run as a Locust worker of --master-host")
    master_host: str = option("127.0.0.1", k.text, help="master address for --worker")
    master_port: int = option(5557, k.port, help="master port (default 5557)")
    master_bind_host: str = option(
        "127.0.0.1", k.text,
        help="address the --master listens on for workers (default 127.0.0.1: only workers on this host can "
             "connect); for workers on other machines give this host's address or 0.0.0.0 (all interfaces), and "
             "mind that anyone who reaches the port can join the run")
    workers: int = option(0, k.nonneg_int, help="start N local worker processes (multi-core load)")
    print_locustfile: bool = option(False, k.switch, action="switch", help="print the locustfile's path and exit")

    def check(self) -> None:
        if self.master and self.worker:
            raise ConfigError("--master and --worker exclude each other")
        if not self.master_bind_host.strip():
            raise ConfigError("--master-bind-host is empty: give an address such as 127.0.0.1 or 0.0.0.0")


# The RunConfig fields a Locust process reads from its own command line, as --loadgen-<flag> (`loadgen locust`
# passes them; a plain `locust -f` user gives them): the workload and what shapes each request.
LOCUSTFILE_FIELDS: dict[str, tuple[str, ...]] = {
    "target": ("model", "endpoint", "ignore_eos"),
    "workload": ("input_len", "output_len", "max_context", "tokenizer", "seed", "dataset", "dataset_format",
                 "multi_turn", "prefix_groups", "prefix_len", "turns"),
    "load": ("timeout",),
    "slo": ("limits_ms",),
}
# and those `loadgen locust` itself takes: every target and workload option `loadgen run` has, the SLO, the
# closed loop's users and run time, the per-request timeout and the run directory
LOCUST_CLI_SKIP = ("target.dry_run", "load.qps", "load.arrival", "load.burstiness", "load.time_scale",
                   "load.num_requests", "load.warmup", "load.idle_timeout", "load.max_errors", "load.max_error_rate",
                   "load.stall_timeout", "load.workers", "output.json", "output.quiet", "output.report", "output.csv")
