"""Flakes: add one (its evaluation is queued), list them with their evaluation
state, ask for another evaluation, remove one.

No request runs `nix`: `nixie serve`'s build worker evaluates queued flakes
(queued → evaluating → idle) and records the configurations or Nix's error."""

from __future__ import annotations

from flask import Response, jsonify, url_for

from appliance.domain import flakes

from ..context import conn
from . import args
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
       body={"type": "object", "required": ["url"], "properties": {"url": STR}},
       response=ref("Flake"), status=ACCEPTED, errors=(400, 409), headers=LOCATION)
def add_flake():
    return _accepted(flakes.add_flake(conn(), args.want(args.body(), "url", str, True)))


@route("/flakes/<int:flake_id>", "GET", "One flake", tag="flakes", params=[FLAKE_ID],
       response=ref("Flake"), errors=(404,))
def get_flake(flake_id: int):
    return jsonify(flakes.get_flake(conn(), str(flake_id)))


@route("/flakes/<int:flake_id>", "DELETE", "Remove a flake", tag="flakes", params=[FLAKE_ID],
       status=204, errors=(404,))
def remove_flake(flake_id: int):
    flakes.remove_flake(conn(), str(flake_id))
    return Response(status=204)


@route("/flakes/<int:flake_id>/refresh", "POST", "Queue another evaluation of the flake "
       "(one queued or running already stays)", tag="flakes", params=[FLAKE_ID],
       response=ref("Flake"), status=ACCEPTED, errors=(404,), headers=LOCATION)
def refresh_flake(flake_id: int):
    return _accepted(flakes.request_evaluation(conn(), str(flake_id)))
