"""HTTP routes of the studio's own API for what is stored (``/api/v1``): history, images, mood boards
and the caller's API tokens.

- ``GET /history`` (filters ``text provider model tag category mode date_from date_to parent_id``,
  ``limit`` 1-100, ``cursor`` from the previous page's ``next_cursor``); ``GET /history/export.csv``;
- ``GET /images/{id}`` (the record), ``/file``, ``/thumbnail``, ``/metadata`` (what the file embeds);
  ``PUT /images/{id}/tags`` (replace), ``PATCH /images/{id}/tags`` (add / remove);
  ``PATCH /images/{id}`` (category, shared); ``DELETE /images/{id}``;
- ``GET|POST /boards``, ``GET|PATCH|DELETE /boards/{id}``, ``POST /boards/{id}/images`` (add),
  ``DELETE /boards/{id}/images/{image_id}``, ``PUT /boards/{id}/order``, ``GET /boards/{id}/collage``
  (PNG or JPEG), ``GET /boards/{id}/export.zip``;
- ``GET|POST /tokens``, ``DELETE /tokens/{id}`` (revoke). Tokens are made from the CLI and the UIs: a
  token caller may list its owner's tokens and revoke the one it uses, and gets 403 for the rest.

Visibility is the UIs' (studio.identity): a caller sees their images and shared ones, and changes
only their own; anything else is 404, exactly as if it did not exist. Answers leave out owner ids,
tokens (but the one just made) and server paths (``ImageRecord.public_dict``). Routes are plain
functions: FastAPI runs them in its thread pool, off the event loop.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from studio.errors import InvalidRequest, NotFound
from studio.http.deps import Caller, get_application, get_caller, get_studio, get_tokens
from studio.http.errors import ApiError
from studio.identity import may_change
from studio.imaging import MIME_TYPES, sniff_format
from studio.types import ImageRecord

API_PREFIX = "/api/v1"
router = APIRouter(prefix=API_PREFIX, tags=["library"])

CallerDep = Annotated[Caller, Depends(get_caller)]
StudioDep = Annotated[Any, Depends(get_studio)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is a 400, not silently ignored


# -- shapes ------------------------------------------------------------------------------------


def image_info(record: ImageRecord, caller: Caller) -> dict[str, Any]:
    """An image as the library routes show it: ``ImageRecord.public_dict`` (no owner, no server path),
    ``url`` and ``thumbnail_url`` (server routes), and ``editable`` (whether the caller owns it)."""
    return {**record.public_dict(), "url": f"{API_PREFIX}/images/{record.id}/file",
            "thumbnail_url": f"{API_PREFIX}/images/{record.id}/thumbnail",
            "editable": may_change(record, caller.owner)}


def board_info(board: Any) -> dict[str, Any]:
    """A mood board without its owner: ``{id, name, notes, created_at, updated_at, item_count}``."""
    return {name: value for name, value in board.to_dict().items() if name != "owner"}


def _file_response(data: bytes, name: str, *, download: bool = False) -> Response:
    kind = sniff_format(data)
    media = MIME_TYPES.get(kind or "", "application/octet-stream")
    disposition = "attachment" if download else "inline"
    # private: an image is the caller's, or shared; a shared cache must not hand it to someone else
    return Response(data, media_type=media, headers={
        "Content-Disposition": f'{disposition}; filename="{name}.{kind or "bin"}"', "Cache-Control": "private"})


# -- history -----------------------------------------------------------------------------------


def _filters(text: str | None = None, provider: str | None = None, model: str | None = None, tag: str | None = None,
             category: str | None = None, mode: str | None = None,
             date_from: date | None = Query(None, description="YYYY-MM-DD, inclusive"),
             date_to: date | None = Query(None, description="YYYY-MM-DD, inclusive"),
             parent_id: str | None = None) -> dict[str, Any]:
    # Dates are parsed here (a bad one is a 400 naming it) and passed on as the index stores days.
    return {name: value.isoformat() if isinstance(value, date) else value for name, value in (
        ("text", text), ("provider", provider), ("model", model), ("tag", tag), ("category", category),
        ("mode", mode), ("date_from", date_from), ("date_to", date_to), ("parent_id", parent_id)) if value}


Filters = Annotated[dict[str, Any], Depends(_filters)]


@router.get("/history")
def history(caller: CallerDep, filters: Filters, application=Depends(get_application),
            limit: int = Query(24, description="images per page, 1-100"),
            cursor: str | None = Query(None, description="next_cursor of the previous page")) -> dict[str, Any]:
    """The caller's images and shared ones, newest first: ``{items, total, limit, next_cursor}``
    (``next_cursor`` is null on the last page). Dates are YYYY-MM-DD, inclusive."""
    page = application.history(caller.owner, filters, cursor=cursor, limit=limit)
    return {"items": [image_info(record, caller) for record in page.items], "total": page.total,
            "limit": page.limit, "next_cursor": page.next_cursor}


@router.get("/history/export.csv", response_class=Response)
def history_csv(caller: CallerDep, filters: Filters, application=Depends(get_application)) -> Response:
    """Every image ``/history`` would list with these filters, as CSV (no owner, no server path)."""
    text = application.export_history_csv(caller.owner, filters)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": 'attachment; filename="history.csv"'})


# -- images ------------------------------------------------------------------------------------


@router.get("/images/{image_id}")
def image(image_id: str, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """One image's record (404 when the caller may not see it)."""
    return image_info(studio.get_image(image_id, caller.owner), caller)


@router.get("/images/{image_id}/file", response_class=Response)
def image_file(image_id: str, caller: CallerDep, studio: StudioDep,
               download: bool = Query(False, description="as an attachment")) -> Response:
    """The image file (PNG, JPEG or WEBP, with the studio's metadata embedded)."""
    record = studio.get_image(image_id, caller.owner)
    return _file_response(studio.image_bytes(record), record.id, download=download)


@router.get("/images/{image_id}/thumbnail", response_class=Response)
def image_thumbnail(image_id: str, caller: CallerDep, studio: StudioDep) -> Response:
    """A small preview of the image (its longer side at most the studio's thumbnail size)."""
    record = studio.get_image(image_id, caller.owner)
    return _file_response(studio.storage.read_thumbnail(record), f"{record.id}-thumbnail")


@router.get("/images/{image_id}/metadata")
def image_metadata(image_id: str, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """The metadata embedded in the image file: ``generation`` (prompt, seed, steps... in one shape
    whichever tool wrote it), ``studio`` (the record written into it) and ``seed_note``."""
    record = studio.get_image(image_id, caller.owner)
    # The file's bytes, not the id: Studio.info reads a string that names an existing file as a path.
    return studio.info(studio.image_bytes(record), caller.owner)


class TagsBody(_Body):
    tags: list[str] = Field(description="the image's tags, replacing the ones it has")


class TagChanges(_Body):
    add: list[str] = Field(default_factory=list, description="tags to add")
    remove: list[str] = Field(default_factory=list, description="tags to take off")


@router.put("/images/{image_id}/tags")
def replace_tags(image_id: str, body: TagsBody, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """Replace the image's tags (only the owner's images; others are 404)."""
    return image_info(studio.update_image(image_id, caller.owner, tags=body.tags), caller)


@router.patch("/images/{image_id}/tags")
def change_tags(image_id: str, body: TagChanges, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """Add and remove tags (a tag both added and removed is removed)."""
    record = studio.get_image(image_id, caller.owner)
    removed = {tag.strip().lower() for tag in body.remove}
    tags = [tag for tag in [*record.tags, *body.add] if tag.strip().lower() not in removed]
    return image_info(studio.update_image(image_id, caller.owner, tags=tags), caller)


class ImageChanges(_Body):
    category: str | None = Field(None, description="the image's category ('' for none)")
    shared: bool | None = Field(None, description="whether every visitor may see it")


@router.patch("/images/{image_id}")
def change_image(image_id: str, body: ImageChanges, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """Change the image's category and/or whether it is shared."""
    fields = body.model_dump(exclude_none=True)
    if not fields:
        raise InvalidRequest("nothing to change: give category and/or shared")
    return image_info(studio.update_image(image_id, caller.owner, **fields), caller)


@router.delete("/images/{image_id}")
def delete_image(image_id: str, caller: CallerDep, studio: StudioDep) -> dict[str, Any]:
    """Delete the image (file, thumbnail, record, and its place on every board)."""
    studio.delete_image(image_id, caller.owner)
    return {"deleted": image_id}


# -- mood boards -------------------------------------------------------------------------------


def _boards(studio: StudioDep):
    from studio.boards import Boards

    return Boards(studio)


BoardsDep = Annotated[Any, Depends(_boards)]


class NewBoard(_Body):
    name: str = Field(description="1-80 characters, unique among the caller's boards")
    notes: str = ""


class BoardChanges(_Body):
    name: str | None = None
    notes: str | None = None


class ImageIds(_Body):
    image_ids: list[str] = Field(description="stored image ids, in order")


@router.get("/boards")
def boards(caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """The caller's mood boards, most recently changed first."""
    return {"boards": [board_info(board) for board in boards.list(caller.owner)]}


@router.post("/boards", status_code=201)
def create_board(body: NewBoard, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    return board_info(boards.create(caller.owner, body.name, body.notes))


@router.get("/boards/{board_id}")
def board(board_id: str, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """The board and its images in order, each with its note."""
    found = boards.get(caller.owner, board_id)
    items = [{**image_info(record, caller), "position": item.position, "note": item.note}
             for item, record in boards.images(caller.owner, board_id)]
    return {**board_info(found), "items": items}


@router.patch("/boards/{board_id}")
def change_board(board_id: str, body: BoardChanges, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """Rename the board and/or change its notes."""
    if body.name is None and body.notes is None:
        raise InvalidRequest("nothing to change: give name and/or notes")
    boards.get(caller.owner, board_id)
    if body.name is not None:
        boards.rename(caller.owner, board_id, body.name)
    if body.notes is not None:
        boards.set_notes(caller.owner, board_id, body.notes)
    return board_info(boards.get(caller.owner, board_id))


@router.delete("/boards/{board_id}")
def delete_board(board_id: str, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """Delete the board (its images stay in the history)."""
    boards.delete(caller.owner, board_id)
    return {"deleted": board_id}


@router.post("/boards/{board_id}/images")
def add_to_board(board_id: str, body: ImageIds, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """Add images the caller may see at the end of the board: ``{added, board}``."""
    added = boards.add(caller.owner, board_id, body.image_ids)
    return {"added": added, "board": board_info(boards.get(caller.owner, board_id))}


@router.delete("/boards/{board_id}/images/{image_id}")
def remove_from_board(board_id: str, image_id: str, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """Take an image off the board (the image itself stays)."""
    if image_id not in {item.image_id for item in boards.items(caller.owner, board_id)}:
        raise NotFound(f"image {image_id!r} is not on this board")
    boards.remove(caller.owner, board_id, image_id)
    return board_info(boards.get(caller.owner, board_id))


@router.put("/boards/{board_id}/order")
def reorder_board(board_id: str, body: ImageIds, caller: CallerDep, boards: BoardsDep) -> dict[str, Any]:
    """Put the board's images in this order (images not named keep theirs, after)."""
    boards.reorder(caller.owner, board_id, body.image_ids)
    return board(board_id, caller, boards)


@router.get("/boards/{board_id}/collage", response_class=Response)
def board_collage(board_id: str, caller: CallerDep, boards: BoardsDep,
                  format: Literal["png", "jpeg"] = Query("png"),
                  cell: int = Query(256, ge=32, le=1024, description="pixels per image square"),
                  columns: int | None = Query(None, ge=1, le=50)) -> Response:
    """The board as one image: its name, then its images in a grid, in board order."""
    data = boards.collage(caller.owner, board_id, cell=cell, columns=columns, output_format=format)
    return _file_response(data, f"board-{board_id}")


@router.get("/boards/{board_id}/export.zip", response_class=Response)
def board_zip(board_id: str, caller: CallerDep, boards: BoardsDep) -> Response:
    """The board's images in order with manifest.csv/json, board.json and collage.png."""
    data = boards.export_zip(caller.owner, board_id)
    return Response(data, media_type="application/zip",
                    headers={"Content-Disposition": f'attachment; filename="board-{board_id}.zip"'})


# -- API tokens --------------------------------------------------------------------------------


class NewToken(_Body):
    name: str = Field(description="what the token is for, 1-80 characters")


@router.get("/tokens")
def tokens(caller: CallerDep, tokens=Depends(get_tokens)) -> dict[str, Any]:
    """The caller's API tokens (never the tokens themselves), newest first; ``current`` marks the
    one the caller sent (the one a token caller may revoke)."""
    return {"tokens": [{**token.public_dict(), "current": token.id == caller.token_id}
                       for token in tokens.list(caller.owner)]}


def _not_with_a_token(caller: Caller, what: str) -> None:
    """403 for a caller that came with a token: tokens are made and managed from the CLI and the UIs
    (a signed-in visitor), never by a token. A token minting tokens would multiply its rate limit,
    and a stolen one could mint a token that outlives its revocation."""
    if not caller.local:
        raise ApiError(403, "forbidden", f"an API token cannot {what}: use the studio's UI (API tokens) or "
                                         "`python -m studio token` on the server")


@router.post("/tokens", status_code=201)
def create_token(body: NewToken, caller: CallerDep, tokens=Depends(get_tokens)) -> JSONResponse:
    """A new token for the caller: ``token`` is in this answer only; it cannot be shown again. Only
    the tokenless local user (``STUDIO_VISITORS=local``) may: a token caller gets 403."""
    _not_with_a_token(caller, "make tokens")
    row, secret = tokens.create(caller.owner, body.name)
    return JSONResponse({**row.public_dict(), "token": secret}, status_code=201,
                        headers={"Cache-Control": "no-store"})


@router.delete("/tokens/{token_id}")
def revoke_token(token_id: str, caller: CallerDep, tokens=Depends(get_tokens)) -> dict[str, Any]:
    """Revoke one of the caller's tokens. A token caller may revoke only the token it is using (its
    next request is 401); another token is 403. The tokenless local user may revoke any of its own."""
    wanted = str(token_id).strip()
    if not caller.local and caller.token_id != wanted:
        if all(token.id != wanted for token in tokens.list(caller.owner)):
            return tokens.revoke(caller.owner, wanted).public_dict()  # not the caller's: 404, as for any id
        _not_with_a_token(caller, "revoke another token")
    return tokens.revoke(caller.owner, wanted).public_dict()


__all__ = ["board_info", "image_info", "router"]
