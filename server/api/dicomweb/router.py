"""Assemble the DICOMweb routers under one prefix."""

from __future__ import annotations

from fastapi import APIRouter

from server.api.dicomweb import qido, stow, wado

router = APIRouter()
router.include_router(stow.router)
router.include_router(qido.router)
router.include_router(wado.router)
