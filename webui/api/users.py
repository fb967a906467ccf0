"""Admin users: list, add, remove (not yourself, not the last admin); the caller's own
password change."""

from __future__ import annotations

from flask import Response, g, jsonify, session

from appliance.domain import users

from ..context import conn
from . import args
from .registry import route
from .schemas import SCHEMAS, STR, arr, p, ref

USERNAME = p("username", {"type": "string", "pattern": "^[a-z_][a-z0-9_.-]{0,31}$"})

SCHEMAS.update({  # this resource's records, in the one OpenAPI document
    "User": {"type": "object", "properties": {
        "id": {"type": "integer"}, "username": STR, "role": STR,
        "created_at": {"type": "number"}, "last_login": {"type": ["number", "null"]}}},
    "UserInput": {"type": "object", "required": ["username", "password"], "properties": {
        "username": STR, "password": {"type": "string", "minLength": users.MIN_PASSWORD}}},
    "PasswordChange": {"type": "object", "required": ["current_password", "new_password"],
                       "properties": {"current_password": STR, "new_password": {
                           "type": "string", "minLength": users.MIN_PASSWORD}}},
})


@route("/users", "GET", "Admin users", tag="users", response=arr(ref("User")))
def list_users():
    return jsonify(users.list_users(conn()))


@route("/users", "POST", "Add an admin", tag="users", body=ref("UserInput"), response=ref("User"),
       status=201, errors=(400, 409))
def add_user():
    d = args.body()
    username = args.want(d, "username", str, True)
    users.create_user(conn(), username, args.want(d, "password", str, True))
    return jsonify(users.get_user_by_name(conn(), username)), 201


@route("/users/<username>", "DELETE", "Remove an admin (not yourself, not the last one); "
       "their API tokens go with them", tag="users", params=[USERNAME], status=204,
       errors=(404, 409))
def remove_user(username: str):
    users.remove_user(conn(), username, acting_user_id=g.user["id"])
    return Response(status=204)


@route("/account/password", "POST", "Change the caller's password (the current one is asked); "
       "every other session of theirs ends", tag="users", body=ref("PasswordChange"),
       status=204, errors=(400,))
def change_password():
    d = args.body()
    stamp = users.change_password(conn(), g.user["id"], args.want(d, "current_password", str, True),
                                  args.want(d, "new_password", str, True))
    if g.get("auth") == "session":
        session["stamp"] = stamp  # the calling session goes on
    return Response(status=204)
