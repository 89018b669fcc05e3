"""Document 3's job API (POST /api/images/generate, status, result). Routes follow."""

from fastapi import APIRouter

router = APIRouter()
