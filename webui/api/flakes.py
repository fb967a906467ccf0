"""Flakes: add one (its evaluation is queued), list them with their evaluation
state, ask for another evaluation, remove one; its build policy, its credential (an
access token or SSH deploy key, never shown again) and its webhook.

No request runs `nix`: `nixie serve`'s build worker evaluates queued flakes
(queued → evaluating → idle) and records the configurations or Nix's error.

`POST /flakes/<id>/hook` is the one route without a login: a forge's push webhook,
verified by its signature (`appliance.nix.flake_access.verify_hook`); a wrong or missing
signature, an unknown flake or one without a webhook secret all answer the same 401, a
body over 1 MiB 413, and however many valid hooks come, at most one evaluation runs per
`flakes.HOOK_MIN_INTERVAL` seconds."""

from __future__ import annotations

from flask import Response, jsonify, request, url_for

from appliance.domain import events, flakes
from appliance.errors import InvalidInput
from appliance.nix import flake_access

from ..context import config, conn
from . import args
from .errors import api_error
from .registry import route
from .schemas import FLAKE_ID, STR, arr, ref

ACCEPTED = 202
LOCATION = {"Location": {"description": "the flake: poll it until eval_state is idle",
                         "schema": {"type": "string"}}}


def _accepted(f: dict) -> tuple[Response, int, dict[str, str]]:
    """202 with the flake record; Location is where to follow its evaluation."""
    return jsonify(f), ACCEPTED, {"Location": url_for("api.get_flake", flake_id=f["id"])}


@route("/flakes", "GET", "List flakes, their evaluation state and nixosConfigurations",
       tag="flakes", response=arr(ref("Flake")))
def list_flakes():
    return jsonify(flakes.list_flakes(conn()))


@route("/flakes", "POST", "Add a flake URL; its evaluation is queued (follow Location until "
       "eval_state is idle)", tag="flakes",
       body={"type": "object", "required": ["url"], "properties": {
           "url": STR, "build_policy": {"enum": list(flakes.POLICIES),
                                        "description": "default: builder.flake_policy"}}},
       response=ref("Flake"), status=ACCEPTED, errors=(400, 409), headers=LOCATION)
def add_flake():
    d = args.body()
    policy = args.want(d, "build_policy", str) or config().builder.flake_policy
    return _accepted(flakes.add_flake(conn(), args.want(d, "url", str, True), policy))


@route("/flakes/<int:flake_id>", "GET", "One flake", tag="flakes", params=[FLAKE_ID],
       response=ref("Flake"), errors=(404,))
def get_flake(flake_id: int):
    return jsonify(flakes.get_flake(conn(), str(flake_id)))


@route("/flakes/<int:flake_id>", "DELETE", "Remove a flake", tag="flakes", params=[FLAKE_ID],
       status=204, errors=(404,))
def remove_flake(flake_id: int):
    flakes.remove_flake(conn(), str(flake_id))
    flake_access.remove_files(config().state_dir, flake_id)
    return Response(status=204)


@route("/flakes/<int:flake_id>", "PATCH", "Change a flake's build policy (on_change: bind the "
       "hosts it declares and build changed systems by itself; manual: neither)", tag="flakes",
       params=[FLAKE_ID], body={"type": "object", "required": ["build_policy"], "properties": {
           "build_policy": {"enum": list(flakes.POLICIES)}}},
       response=ref("Flake"), errors=(400, 404))
def update_flake(flake_id: int):
    policy = args.want(args.body(), "build_policy", str, True)
    return jsonify(flakes.set_policy(conn(), str(flake_id), policy))


@route("/flakes/<int:flake_id>/credential", "PUT", "Set (or with kind none, remove) the "
       "credential nix fetches a private flake with: an access token or an SSH deploy key. It "
       "is stored 0600 under state_dir and never shown again", tag="flakes", params=[FLAKE_ID],
       body={"type": "object", "required": ["kind"], "properties": {
           "kind": {"enum": list(flake_access.KINDS)}, "secret": STR}},
       response=ref("Flake"), errors=(400, 404))
def set_flake_credential(flake_id: int):
    d = args.body()
    kind = args.want(d, "kind", str, True)
    if kind not in flake_access.KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(flake_access.KINDS)}", field="kind")
    f = flakes.get_flake(conn(), str(flake_id))
    flake_access.store_credential(config().state_dir, f["id"], kind, args.want(d, "secret", str))
    flakes.set_credential_kind(conn(), f["id"], kind)
    flakes.request_evaluation(conn(), str(f["id"]))
    return jsonify(flakes.get_flake(conn(), str(f["id"])))


@route("/flakes/<int:flake_id>/hook-secret", "POST", "Make a new webhook secret (the old one "
       "stops working); the answer is the only time it is shown", tag="flakes",
       params=[FLAKE_ID], response=ref("HookSecret"), status=201, errors=(404,))
def new_hook_secret(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    secret = flake_access.new_hook_secret(config().state_dir, f["id"])
    flakes.set_hook_enabled(conn(), f["id"], True)
    return jsonify({"secret": secret, "url": url_for("api.flake_hook", flake_id=f["id"],
                                                     _external=True)}), 201


@route("/flakes/<int:flake_id>/hook-secret", "DELETE", "Turn the webhook off", tag="flakes",
       params=[FLAKE_ID], status=204, errors=(404,))
def remove_hook_secret(flake_id: int):
    f = flakes.get_flake(conn(), str(flake_id))
    flake_access.remove_hook_secret(config().state_dir, f["id"])
    flakes.set_hook_enabled(conn(), f["id"], False)
    return Response(status=204)


HOOK_REFUSED = "no webhook of this flake matches that signature"


@route("/flakes/<int:flake_id>/hook", "POST", "A forge's push webhook (no login: signed with "
       "the flake's webhook secret as GitHub X-Hub-Signature-256, Gitea/Forgejo/Gogs "
       "X-*-Signature or GitLab X-Gitlab-Token); queues an evaluation of the flake",
       tag="flakes", params=[FLAKE_ID], body={"type": "object"},
       response={"type": "object", "properties": {"result": {"enum": ["queued", "pending"]}}},
       status=ACCEPTED, errors=(413,))
def flake_hook(flake_id: int):
    ip = request.remote_addr
    if (request.content_length or 0) > flake_access.MAX_HOOK_BODY:
        return api_error(413, f"a webhook body is at most {flake_access.MAX_HOOK_BODY} bytes")
    body = request.stream.read(flake_access.MAX_HOOK_BODY + 1)
    if len(body) > flake_access.MAX_HOOK_BODY:
        return api_error(413, f"a webhook body is at most {flake_access.MAX_HOOK_BODY} bytes")
    c = conn()
    row = c.execute("SELECT id, hook_enabled FROM flakes WHERE id = ?", (flake_id,)).fetchone()
    secret = flake_access.hook_secret(config().state_dir, flake_id) \
        if row is not None and row["hook_enabled"] else None
    # an unknown flake is checked against a throwaway secret: the answer and its cost are
    # the same as for a wrong signature
    if not flake_access.verify_hook(secret or b"\0" * 32, request.headers, body) or not secret:
        events.record(c, "flake.hook_rejected", f"webhook for flake {flake_id} refused: "
                      "wrong or missing signature", level="warning", ip=ip,
                      data={"flake": flake_id})
        return api_error(401, HOOK_REFUSED)
    result = flakes.hook_received(c, flake_id)
    events.record(c, "flake.hook_received", f"webhook for flake {flake_id}: evaluation {result}",
                  ip=ip, data={"flake": flake_id, "result": result,
                               "delivery": request.headers.get("X-GitHub-Delivery", "")[:64]
                               or request.headers.get("X-Gitea-Delivery", "")[:64] or None})
    return jsonify({"result": result}), ACCEPTED


@route("/flakes/<int:flake_id>/refresh", "POST", "Queue another evaluation of the flake "
       "(one queued or running already stays)", tag="flakes", params=[FLAKE_ID],
       response=ref("Flake"), status=ACCEPTED, errors=(404,), headers=LOCATION)
def refresh_flake(flake_id: int):
    return _accepted(flakes.request_evaluation(conn(), str(flake_id)))
