"""withings-lake on Airflow: incremental `sync` every 15 minutes, and a manual `backfill`.

Two DAGs, one mapped task per shard (dynamic task mapping over `range(N)`):

- `withings_lake`: `withings-lake sync --pipeline P --shard i/N --log-format json --report json`
  every 15 minutes, `catchup=False`, `max_active_runs=1` (a slow run delays the next one, never
  overlaps it).
- `withings_lake_backfill`: manual trigger (`schedule=None`) with the params `from_date` and
  `to_date` (optional, included; default today), running
  `withings-lake backfill --pipeline P --from D [--to D] --shard i/N --log-format json --report json`.

Settings are read when a run starts (never at parse time, so parsing this file touches no
database): an Airflow Variable of the same name, else the environment, else the default.

| setting                  | default                            |
| ------------------------ | ---------------------------------- |
| `WITHINGS_LAKE_BIN`      | `withings-lake` (on the worker's PATH) |
| `WITHINGS_LAKE_PIPELINE` | `/etc/withings-lake/pipeline.toml` |
| `WITHINGS_LAKE_SHARDS`   | `4`: must equal the lake's shard count (`[lake] shards`, fixed in `_lake.json`) |
| `WITHINGS_LAKE_FAIL_ON_PARTIAL` | `true`: a partial shard turns the run red (see exit code 1) |

Two settings are read from the environment at parse time because they shape the DAG itself:
`WITHINGS_LAKE_CONN_ID` (default `withings_lake`, a Python identifier; empty = inherit the
worker's environment) and `WITHINGS_LAKE_SECRET_ENV` (default `WITHINGS_CLIENT_SECRET`, the
variable the pipeline file's `client_secret_env` names).

Secrets: the Withings client secret is never written here, in a Variable or in a pipeline file.
It comes from an Airflow connection (password field), stored in the metadata database or, better,
a secrets backend (Vault, AWS Secrets Manager, GCP Secret Manager...), and reaches the process as
the environment variable the pipeline names. Airflow masks connection passwords in logs and
rendered fields. The credentials key (`WITHINGS_LAKE_KEY`, or the pipeline's `key_file`) belongs
in the worker's environment or a mounted secret, the same way.

Exit codes of `sync` and `backfill`, and what each becomes here:

| code | meaning | Airflow |
| ---- | ------- | ------- |
| 0 | success | task success |
| 1 | partial: some users failed or did not finish (the report names them), the others are committed | task success with a warning; `check_shards` then fails the run (`WITHINGS_LAKE_FAIL_ON_PARTIAL`) |
| 2 | configuration (flag, pipeline file, missing secret or key) | task failed, no retry (`AirflowFailException`) |
| 3 | busy: another writer holds the shard's lease | task failed, retried after `retry_delay` |
| 4 | fatal for this run (network, storage, Withings down...) | task failed, retried |
| other | killed (e.g. 137 after the OOM killer), bash 127 (binary not found) | task failed, retried |

Runs on Airflow 3 with its own import paths: `DAG`, `task`, `Param`, `Variable` and
`get_current_context` from `airflow.sdk`, the exceptions from `airflow.sdk.exceptions` (Airflow
3.2 and later; 3.0 and 3.1 keep them in `airflow.exceptions`) and `BashOperator` from the standard
provider (`airflow.providers.standard`, installed with `apache-airflow`), so parsing it raises no
deprecation warning. Every one of these imports falls back to the Airflow 2 path when the
Airflow 3 one is missing, so the file also runs on Airflow 2.6 or later (TaskFlow,
`.partial().expand()`, `schedule=`, `Param`).
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import shutil
from datetime import date, timedelta

import pendulum

# Each Airflow import is tried at its Airflow 3 location first (no deprecation warning there) and
# falls back to the Airflow 2 path (tests/it/airflow.rs checks that every import comes in pairs).
try:
    from airflow.sdk import DAG, Param, task
except ImportError:  # Airflow 2
    from airflow import DAG
    from airflow.decorators import task
    from airflow.models.param import Param
try:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
except ImportError:  # Airflow 2, and 3.0 / 3.1 (where these are not deprecated yet)
    from airflow.exceptions import AirflowException, AirflowFailException
try:
    from airflow.providers.standard.operators.bash import BashOperator
except ImportError:  # Airflow 2 without the standard provider
    from airflow.operators.bash import BashOperator

# Exit codes of `withings-lake sync` / `backfill` (the table above; keep in step with src/cli).
EXIT_OK = 0  # success
EXIT_PARTIAL = 1  # some users failed, the rest is committed: success + warning, run marked red
EXIT_CONFIG = 2  # bad flag, pipeline file, secret or key: fail, never retry
EXIT_BUSY = 3  # another writer holds the shard's lease: fail, retry after retry_delay
EXIT_FATAL = 4  # the run could not go on (network, storage, Withings): fail, retry

# The commands, with shell-quoted values substituted by `_commands`. The flags are spelled out
# here so a reader (and tests/it/airflow.rs) sees exactly what runs.
SYNC_COMMAND = "{bin} sync --pipeline {pipeline} --shard {shard} --log-format json --report json"
BACKFILL_COMMAND = (
    "{bin} backfill --pipeline {pipeline} --from {from_date}{to_flag} --shard {shard}"
    " --log-format json --report json"
)

# Parse-time settings (plain environment: no database access while the file is parsed).
CONN_ID = os.environ.get("WITHINGS_LAKE_CONN_ID", "withings_lake")
SECRET_ENV = os.environ.get("WITHINGS_LAKE_SECRET_ENV", "WITHINGS_CLIENT_SECRET")

# The client secret as a template rendered on the worker from the connection's password; with no
# connection configured the process inherits the worker's environment (e.g. a Kubernetes secret).
SECRET_FROM_CONNECTION = {SECRET_ENV: "{{ conn." + CONN_ID + ".password }}"} if CONN_ID else None


def _setting(name: str, default: str) -> str:
    """An Airflow Variable called `name`, else the environment variable `name`, else `default`.

    Only called inside tasks: a Variable read at module level would hit the database every
    time the scheduler parses this file.
    """
    try:
        from airflow.sdk import Variable
    except ImportError:  # Airflow 2: the same lookup, with `default_var` for `default`
        from airflow.models import Variable

        value = Variable.get(name, default_var=None)
    else:
        value = Variable.get(name, default=None)
    if value is None:
        value = os.environ.get(name, default)
    return str(value).strip()


def _commands(template: str, **values: str) -> list[str]:
    """One command per shard, `i/N` for i in range(N), every value shell-quoted."""
    raw = _setting("WITHINGS_LAKE_SHARDS", "4")
    try:
        shards = int(raw)
    except ValueError:
        shards = 0
    if shards < 1:
        raise AirflowFailException(f"WITHINGS_LAKE_SHARDS must be a positive integer, got {raw!r}")
    base = {
        "bin": shlex.quote(_setting("WITHINGS_LAKE_BIN", "withings-lake")),
        "pipeline": shlex.quote(_setting("WITHINGS_LAKE_PIPELINE", "/etc/withings-lake/pipeline.toml")),
        **values,
    }
    return [template.format(shard=f"{i}/{shards}", **base) for i in range(shards)]


def _shard_of(command: str) -> str:
    """The `i/N` of a command built by `_commands`."""
    found = re.search(r"--shard (\S+)", command)
    return found.group(1) if found else "?"


class WithingsLakeOperator(BashOperator):
    """A BashOperator that turns withings-lake's exit codes into task states.

    BashOperator alone knows success, failure (always retried) and skip. Skipping is wrong for
    every code here: a skipped shard looks like a shard that had nothing to do. So this runs the
    command as BashOperator does and decides per code:

    - 1 (partial) succeeds with a warning instead of failing. Failing would retry the whole
      shard: every healthy user again, spending the shard's share of the Withings rate limit,
      and with `max_active_runs=1` holding back the next run of every shard,
      while the failed users usually need a person (a user who must link again) and the next
      scheduled run tries them anyway. The outcome goes to XCom and `check_shards` makes the
      run red once every shard has finished, so a partial is visible and alerts, but blocks
      nothing.
    - 2 (configuration) fails without retry: the same flags and file fail the same way.
    - 3 (busy) and 4 (fatal) fail and are retried with `retry_delay`.
    """

    def execute(self, context):
        shard = _shard_of(self.bash_command)
        result = self.subprocess_hook.run_command(
            command=[shutil.which("bash") or "bash", "-c", self.bash_command],
            env=self.get_env(context),
            output_encoding=self.output_encoding,
            cwd=self.cwd,
        )
        code = result.exit_code
        if code == EXIT_OK:
            return {"shard": shard, "exit_code": code, "outcome": "ok"}
        if code == EXIT_PARTIAL:
            self.log.warning(
                "withings-lake shard %s finished with partial failures (exit 1): the users that "
                "failed are named in the report and the logs above; the others are committed",
                shard,
            )
            return {"shard": shard, "exit_code": code, "outcome": "partial"}
        if code == EXIT_CONFIG:
            raise AirflowFailException(
                f"withings-lake shard {shard}: configuration error (exit 2); not retried, fix the "
                "pipeline file, settings or secrets named in the log"
            )
        if code == EXIT_BUSY:
            raise AirflowException(
                f"withings-lake shard {shard}: busy (exit 3), another writer holds the shard's "
                "lease; retrying later"
            )
        raise AirflowException(f"withings-lake shard {shard}: failed with exit {code}; retrying")


@task
def plan_sync() -> list[str]:
    """The sync command of every shard."""
    return _commands(SYNC_COMMAND)


@task
def plan_backfill() -> list[str]:
    """The backfill command of every shard, from the run's params (validated again here:
    they are typed by a person and end up in a shell command)."""
    try:
        from airflow.sdk import get_current_context
    except ImportError:  # Airflow 2
        from airflow.operators.python import get_current_context

    params = get_current_context()["params"]
    try:
        from_date = date.fromisoformat(str(params["from_date"])).isoformat()
        to_date = params.get("to_date")
        to_date = date.fromisoformat(str(to_date)).isoformat() if to_date else None
    except (KeyError, ValueError) as err:
        raise AirflowFailException(f"from_date / to_date must be YYYY-MM-DD dates: {err}") from err
    if to_date is not None and to_date < from_date:
        raise AirflowFailException(f"to_date {to_date} is before from_date {from_date}")
    to_flag = f" --to {shlex.quote(to_date)}" if to_date else ""
    return _commands(BACKFILL_COMMAND, from_date=shlex.quote(from_date), to_flag=to_flag)


@task(trigger_rule="all_done", retries=0)
def check_shards(outcomes, commands) -> None:
    """Fail the run if a shard failed or was partial (the only leaf task, so it decides the
    run's state). Runs after every shard, whatever their states."""
    outcomes = list(outcomes or [])
    reported = {o["shard"] for o in outcomes}
    failed = [s for s in map(_shard_of, commands or []) if s not in reported]
    partial = sorted(o["shard"] for o in outcomes if o.get("outcome") == "partial")
    if failed:
        raise AirflowException(
            f"shards failed: {', '.join(failed)}; partial (exit 1): {', '.join(partial) or 'none'}"
        )
    if partial:
        message = f"shards with partial failures (exit 1): {', '.join(partial)}"
        if _setting("WITHINGS_LAKE_FAIL_ON_PARTIAL", "true").lower() in ("1", "true", "yes"):
            raise AirflowException(message)
        logging.getLogger("airflow.task").warning(message)


def _shard_tasks(task_id: str, commands, **kwargs):
    """One mapped WithingsLakeOperator per shard command."""
    return WithingsLakeOperator.partial(
        task_id=task_id,
        env=SECRET_FROM_CONNECTION,
        # Keep PATH, HOME, WITHINGS_LAKE_KEY... of the worker; add only the secret.
        append_env=True,
        **kwargs,
    ).expand(bash_command=commands)


with DAG(
    dag_id="withings_lake",
    description="Incremental Withings sync into the Parquet lake, one task per shard",
    schedule="*/15 * * * *",
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=2),
    default_args={"owner": "data-engineering", "retries": 2, "retry_delay": timedelta(minutes=3)},
    tags=["withings-lake"],
    doc_md=__doc__,
) as sync_dag:
    sync_commands = plan_sync()
    sync_shards = _shard_tasks(
        "sync_shard",
        sync_commands,
        # A hung process must not hold every later run back (max_active_runs=1); killing it
        # is safe: commits are atomic and a run is idempotent.
        execution_timeout=timedelta(minutes=50),
    )
    check_shards(sync_shards.output, sync_commands)


with DAG(
    dag_id="withings_lake_backfill",
    description="Backfill from_date..to_date (included) into the lake, one task per shard (manual)",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    # Two backfills on the same shards would only wait on each other's leases.
    max_active_runs=1,
    params={
        "from_date": Param(type="string", format="date", description="First day (YYYY-MM-DD)"),
        "to_date": Param(
            None, type=["null", "string"], format="date", description="Last day, included (default: today)"
        ),
    },
    # Backfills are resumable: a retry continues where the failed attempt stopped.
    default_args={
        "owner": "data-engineering",
        "retries": 5,
        "retry_delay": timedelta(minutes=10),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(hours=1),
    },
    tags=["withings-lake"],
    doc_md=__doc__,
) as backfill_dag:
    backfill_commands = plan_backfill()
    backfill_shards = _shard_tasks("backfill_shard", backfill_commands)
    check_shards(backfill_shards.output, backfill_commands)
