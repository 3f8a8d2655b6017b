# -*- coding: utf-8 -*-
# server-manager playbook runner: stdout callback printing one JSON object per
# line for each Ansible event. The runner parses these lines for progress, the
# failed task and its message, and the recap; it renders the human-readable
# per-run log itself.
#
# Deliberately minimal: results are never dumped whole (module arguments carry
# configuration content and registry passwords); only the message, a short
# stderr tail and the changed flag leave this plugin.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = """
    name: sm_events
    type: stdout
    short_description: one JSON line per event, for the server-manager runner
    description:
      - Prints playbook, play, task, result and recap events as JSON lines.
"""

import json
import sys

from ansible.plugins.callback import CallbackBase

MAX_TEXT = 2000


def _text(value):
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = "\n".join(str(v) for v in value)
    value = str(value)
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + "..."
    return value


MAX_LOG_LINES = 10
MAX_LOG_LINE = 300
EXIT_CODES_MARK = "@@sm-exit-codes@@"


def _time(value):
    # Docker writes the zero time for "never".
    if not value or str(value).startswith("0001-"):
        return None
    return str(value)


def _containers(stdout):
    """`docker container inspect` output reduced to the fields the operator
    reads; the environment, mounts and labels other than the config hash never
    leave the host's answer."""
    try:
        found = json.loads(stdout or "[]")
    except ValueError:
        return []
    out = []
    for c in found if isinstance(found, list) else []:
        if not isinstance(c, dict):
            continue
        state = c.get("State") or {}
        health = state.get("Health") or {}
        labels = (c.get("Config") or {}).get("Labels") or {}
        out.append(
            dict(
                name=str(c.get("Name") or "").lstrip("/"),
                image_id=str(c.get("Image") or ""),
                status=str(state.get("Status") or "unknown"),
                restart_count=int(c.get("RestartCount") or 0),
                started_at=_time(state.get("StartedAt")),
                finished_at=_time(state.get("FinishedAt")),
                exit_code=state.get("ExitCode"),
                health=health.get("Status") or None,
                oom_killed=bool(state.get("OOMKilled")),
                error=_text(state.get("Error")) or None,
                config_sha256=labels.get("io.contrail.server-manager.config-sha256"),
            )
        )
    return out


def _container_logs(results):
    out = []
    for r in results or []:
        if not isinstance(r, dict) or r.get("skipped"):
            continue
        item = r.get("item") or {}
        text = str(r.get("stdout") or "")
        logs, _, codes = text.partition(EXIT_CODES_MARK)
        lines = [l[:MAX_LOG_LINE] for l in logs.splitlines() if l.strip()][-MAX_LOG_LINES:]
        exit_codes = []
        for l in codes.split():
            try:
                exit_codes.append(int(l))
            except ValueError:
                pass
        out.append(
            dict(
                name=str(item.get("Name") or "").lstrip("/"),
                lines=lines,
                exit_codes=exit_codes,
            )
        )
    return out


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "sm_events"

    def __init__(self):
        super(CallbackModule, self).__init__()
        self._task = None

    def _emit(self, event, **fields):
        fields["event"] = event
        sys.stdout.write(json.dumps(fields, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    # ---- playbook and play ----
    def v2_playbook_on_start(self, playbook):
        self._emit("playbook_start")

    def v2_playbook_on_play_start(self, play):
        total = 0
        for block in play.compile():
            for task in block.get_tasks():
                if task.action not in ("meta", "ansible.builtin.meta"):
                    total += 1
        self._emit("play_start", name=_text(play.get_name()), tasks_total=total)

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._task = task.get_name()
        self._emit("task_start", task=_text(self._task))

    def v2_playbook_on_handler_task_start(self, task):
        self._task = task.get_name()
        self._emit("task_start", task=_text(self._task), handler=True)

    # ---- results ----
    def _result(self, status, result, ignore_errors=False):
        res = result._result
        msg = res.get("msg")
        if status in ("failed", "unreachable"):
            # A loop reports "One or more items failed": the cause is in the item.
            for item in res.get("results") or []:
                if isinstance(item, dict) and (item.get("failed") or item.get("unreachable")):
                    msg = item.get("msg") or item.get("stderr") or item.get("module_stderr") or msg
                    break
            if not msg:
                msg = res.get("stderr") or res.get("module_stderr") or res.get("stdout")
        fields = dict(
            task=_text(result._task.get_name()),
            host=_text(result._host.get_name()),
            status=status,
            changed=bool(res.get("changed", False)),
            msg=_text(msg),
        )
        tags = result._task.tags or []
        if status == "ok" and "sm_output" in tags:
            # Tasks tagged sm_output return data to the runner (log listings).
            fields["data"] = res.get("msg")
        if status == "ok" and "sm_containers" in tags:
            fields["containers"] = _containers(res.get("stdout"))
        if status == "ok" and "sm_container_logs" in tags:
            fields["container_logs"] = _container_logs(res.get("results"))
        if status == "failed":
            fields["ignore_errors"] = bool(ignore_errors)
            if res.get("stderr"):
                fields["stderr"] = _text(res.get("stderr"))
        self._emit("result", **fields)

    def v2_runner_on_ok(self, result):
        self._result("ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._result("failed", result, ignore_errors)

    def v2_runner_on_skipped(self, result):
        self._result("skipped", result)

    def v2_runner_on_unreachable(self, result):
        self._result("unreachable", result)

    def v2_runner_item_on_failed(self, result):
        res = result._result
        self._emit(
            "item_failed",
            task=_text(result._task.get_name()),
            msg=_text(res.get("msg") or res.get("stderr")),
        )

    def v2_on_file_diff(self, result):
        # Diff content is the configuration itself (it may hold passwords):
        # never printed; the changed flag of the result reports drift.
        pass

    def v2_playbook_on_no_hosts_matched(self):
        self._emit("warning", msg="no hosts matched")

    def v2_playbook_on_stats(self, stats):
        recap = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            recap[host] = dict(
                ok=s.get("ok", 0),
                changed=s.get("changed", 0),
                unreachable=s.get("unreachable", 0),
                failed=s.get("failures", 0),
                skipped=s.get("skipped", 0),
                rescued=s.get("rescued", 0),
                ignored=s.get("ignored", 0),
            )
        self._emit("stats", recap=recap)

    # Warnings and deprecations go to the display (stderr) as usual.
