"""Runtime settings, read from the environment.

On AWS the values come from the stage's ``environment_variables`` in ``.chalice/config.json``,
which ``python -m deploy up`` writes; chalice also applies them while it imports app.py at deploy
time, which is how the decorators see the right bucket for the stage. Locally the embedded stack
sets the same variables. Every default works for the local stack.
"""
import os
from dataclasses import dataclass

APP_NAME = "shipping-etl"
LOCAL_ACCOUNT_ID = "123456789012"  # moto's default account
DEFAULT_REGION = "us-east-1"


def _int(environ, name, default, minimum=0):
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("%s must be a whole number, got %r" % (name, raw)) from None
    if value < minimum:
        raise ValueError("%s must be >= %d, got %d" % (name, minimum, value))
    return value


@dataclass(frozen=True)
class Settings:
    stage: str = "local"
    account_id: str = LOCAL_ACCOUNT_ID
    region: str = DEFAULT_REGION
    schedule_minutes: int = 10
    generator_rows: int = 100
    # Seconds between crawler polls in the state machine. AWS crawls take minutes, so polling
    # every 15 s costs nothing; the local stand-in crawls in milliseconds and polls with 0.
    poll_seconds: int = 15

    @classmethod
    def from_env(cls, environ=None):
        env = os.environ if environ is None else environ
        return cls(
            stage=env.get("APP_STAGE") or "local",
            account_id=env.get("ACCOUNT_ID") or LOCAL_ACCOUNT_ID,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
            schedule_minutes=_int(env, "SCHEDULE_MINUTES", 10, minimum=1),
            generator_rows=_int(env, "GENERATOR_ROWS", 100, minimum=1),
            poll_seconds=_int(env, "POLL_SECONDS", 15, minimum=0),
        )

    def lambda_environment(self):
        """The environment variables the deploy writes for this stage (all strings)."""
        return {
            "APP_STAGE": self.stage,
            "ACCOUNT_ID": self.account_id,
            "SCHEDULE_MINUTES": str(self.schedule_minutes),
            "GENERATOR_ROWS": str(self.generator_rows),
            "POLL_SECONDS": str(self.poll_seconds),
        }
