"""lmdock's native API: model management (`/api/v1/models...`) and the live request log."""

from fastapi import APIRouter

from lmdock.api.native.logs import router as logs_router
from lmdock.api.native.routes import router as models_router

router = APIRouter()
router.include_router(models_router)
router.include_router(logs_router)

__all__ = ["router"]
