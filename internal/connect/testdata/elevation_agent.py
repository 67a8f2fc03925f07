#!/usr/bin/env python3
"""An agent in Python that uses elevation through `bulkhead connect`.

It has no key, no certificate and no token: only the sidecar's loopback
address, plain HTTP and the standard library. It opens a task under a
manifest through the sidecar's local API, calls a tool its task denies,
asks for elevation, tries to approve its own request (refused), waits for
a human to approve, calls the tool again (allowed), completes the task,
and calls it once more (denied).

Usage: elevation_agent.py SIDECAR_URL [DEADLINE_SECONDS]

It prints one JSON object per line on stdout, for the harness that runs it
(the harness approves when it reads "elevation_requested"), and exits 0
only if every step went as described.
"""

import json
import sys
import time
import urllib.error
import urllib.request

SIDECAR = sys.argv[1].rstrip("/")
DEADLINE = time.monotonic() + (float(sys.argv[2]) if len(sys.argv) > 2 else 30.0)

# No proxy from the environment: the sidecar is on loopback.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def say(event, **fields):
    print(json.dumps(dict(event=event, **fields)), flush=True)


def fail(msg):
    say("failed", error=msg)
    sys.exit(1)


def http(method, path, body=None, headers=None):
    """Sends one request; returns (status, headers, bytes)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(SIDECAR + path, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    timeout = max(1.0, DEADLINE - time.monotonic())
    try:
        with OPENER.open(req, timeout=timeout) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def local(method, path, body=None):
    """Calls the sidecar's local API."""
    status, _, raw = http(method, "/.bulkhead/v1" + path, body, {"Bulkhead-Sidecar": "1"})
    return status, json.loads(raw)


class MCP:
    """MCP over streamable HTTP as plain JSON-RPC POSTs."""

    def __init__(self, server):
        self.path = "/mcp/" + server
        self.session = None
        self.version = "2025-06-18"
        self.next_id = 1

    def post(self, message):
        headers = {"Accept": "application/json, text/event-stream"}
        if self.session:
            headers["Mcp-Session-Id"] = self.session
            headers["MCP-Protocol-Version"] = self.version
        status, hdrs, raw = http("POST", self.path, message, headers)
        if "id" not in message:
            if status // 100 != 2:
                fail("notification %s: HTTP %d %r" % (message["method"], status, raw))
            return None
        if status != 200:
            fail("%s: HTTP %d %r" % (message["method"], status, raw))
        if hdrs.get("Mcp-Session-Id"):
            self.session = hdrs["Mcp-Session-Id"]
        if hdrs.get_content_type() == "text/event-stream":
            # The answer is the data of the event that carries our id.
            for line in raw.decode().splitlines():
                if line.startswith("data:"):
                    msg = json.loads(line[5:])
                    if msg.get("id") == message["id"]:
                        return msg
            fail("%s: no answer in the event stream %r" % (message["method"], raw))
        return json.loads(raw)

    def call(self, method, params):
        msg = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.next_id += 1
        return self.post(msg)

    def initialize(self):
        res = self.call("initialize", {"protocolVersion": self.version, "capabilities": {},
                                       "clientInfo": {"name": "python-agent", "version": "1"}})
        if "result" not in res:
            fail("initialize: %r" % res)
        self.version = res["result"]["protocolVersion"]
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def tool(self, name, arguments):
        return self.call("tools/call", {"name": name, "arguments": arguments})


def denied(res):
    err = res.get("error") or {}
    return "denied" in err.get("message", "") and bool((err.get("data") or {}).get("decision_id"))


def main():
    status, body = local("GET", "/task")
    if status != 200 or body["task"] is not None:
        fail("the sidecar should start at baseline: %d %r" % (status, body))

    status, body = local("POST", "/task", {"manifest": "report-writer", "description": "weekly report"})
    if status != 201 or body["task"]["status"] != "open":
        fail("open task: %d %r" % (status, body))
    task = body["task"]["id"]
    say("task_opened", task=task)

    mcp = MCP("files")
    mcp.initialize()
    write = {"path": "/reports/weekly.md", "content": "# Week 45"}

    res = mcp.tool("write_file", write)
    if not denied(res):
        fail("write before elevation should be denied: %r" % res)
    say("write_denied", decision=res["error"]["data"]["decision_id"])

    status, el = local("POST", "/elevations", {"trigger": "write-report", "justification": "the weekly report is due"})
    if status != 201 or el["status"] != "pending" or el["task"] != task:
        fail("request elevation: %d %r" % (status, el))
    say("elevation_requested", elevation=el["id"], task=task)

    # A manipulated agent would try this; it never works.
    status, body = local("POST", "/elevations/%s/approve" % el["id"], {"reason": "approved, trust me"})
    if status != 403:
        fail("self-approval should be refused: %d %r" % (status, body))
    say("self_approval_refused", code=body.get("code"), error=body.get("error"))

    while True:
        status, el = local("GET", "/elevations/" + el["id"])
        if status != 200:
            fail("poll elevation: %d %r" % (status, el))
        if el["status"] == "active":
            break
        if el["status"] != "pending":
            fail("elevation ended without approval: %r" % el)
        if time.monotonic() > DEADLINE:
            fail("no approval in time")
        time.sleep(0.05)
    say("elevation_active", elevation=el["id"], max_uses=el["max_uses"])

    res = mcp.tool("write_file", write)
    if "result" not in res or res["result"].get("isError"):
        fail("write after approval should succeed: %r" % res)
    say("write_allowed", text="".join(c.get("text", "") for c in res["result"]["content"]))

    status, body = local("POST", "/task/complete", {"reason": "report written"})
    if status != 200 or body["task"]["status"] != "completed":
        fail("complete task: %d %r" % (status, body))
    status, body = local("GET", "/task")
    if status != 200 or body["task"] is not None:
        fail("the sidecar should be back at baseline: %d %r" % (status, body))
    say("task_completed", task=task)

    res = mcp.tool("write_file", write)
    if not denied(res):
        fail("write after the task should be denied: %r" % res)
    say("done", decision=res["error"]["data"]["decision_id"])


if __name__ == "__main__":
    main()
