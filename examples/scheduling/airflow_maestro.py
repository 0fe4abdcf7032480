"""Airflow DAG: Maestro's nightly run, then its status as a check.

`maestro run` exits 0 when every job succeeded or was skipped, 1 when a job failed and 2 when
it could not run; Airflow fails the task on any non-zero exit. Each run processes whatever
changed, late files for old dates included, so catchup is off; to recompute past dates, run
`maestro run --from D --to D --force` by hand.
"""

from datetime import datetime, timedelta

from airflow import DAG
from airflow.operators.bash import BashOperator

LAKE = "/srv/maestro/lake"

with DAG(
    dag_id="maestro_nightly",
    schedule="15 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(minutes=10)},
) as dag:
    run = BashOperator(
        task_id="maestro_run",
        cwd="/srv/maestro",
        bash_command=f"maestro --log-format json run --lake {LAKE}",
        execution_timeout=timedelta(hours=2),
    )
    status = BashOperator(
        task_id="maestro_status",
        bash_command=f"maestro status --lake {LAKE}",
    )
    run >> status
