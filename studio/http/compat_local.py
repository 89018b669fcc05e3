"""Document 5's local-model API (POST /generate, /generate/image, GET /health, GET /, DELETE /cache). Routes follow."""

from fastapi import APIRouter

router = APIRouter()
