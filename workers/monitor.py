"""`jobferry flower`: Flower for jobferry's workers, never without authentication by accident.

Flower shows every task's arguments and results and can revoke tasks, so it refuses to start
unless `FLOWER_BASIC_AUTH` (Flower's own variable, `user:password[,user2:password2]`) is set,
or `--no-auth` says explicitly that something in front of it authenticates. Flower reads the
variable itself; jobferry only checks its shape and never shows the password.
Flower 2.x serves Prometheus metrics at `/metrics` (without authentication) from the task
events the workers send once Flower's periodic `enable_events` (`--enable_events`) reaches them.
"""

from __future__ import annotations

from collections.abc import Mapping

from scheduler.errors import RequestError

AUTH_VARIABLE = "FLOWER_BASIC_AUTH"


def flower_argv(environ: Mapping[str, str], port: int, address: str, no_auth: bool) -> list[str]:
    """Flower's own options for this run.

    Raises:
        RequestError: no credentials (and no `--no-auth`), or credentials of the wrong shape.
    """
    auth = environ.get(AUTH_VARIABLE, "")
    if not auth and not no_auth:
        raise RequestError(
            f"Flower needs authentication: set {AUTH_VARIABLE}=user:password "
            "(several as user1:pw1,user2:pw2), or pass --no-auth if a proxy in front of it "
            "authenticates"
        )
    for number, pair in enumerate(auth.split(",") if auth else [], start=1):
        user, sep, password = pair.partition(":")
        if not sep or not user.strip() or not password:
            raise RequestError(
                f"{AUTH_VARIABLE} entry {number} is not user:password (its value is not shown); "
                "write it as user:password, several separated by commas"
            )
    return [f"--port={port}", f"--address={address}", "--enable_events=True"]
