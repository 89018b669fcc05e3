"""Document 1's web API (POST /api/generate/image, GET /api/generate/providers). Routes follow."""

from fastapi import APIRouter

router = APIRouter()
