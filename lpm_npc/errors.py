"""Errors that carry what went wrong and what to do, with the gRPC status they map to."""

from __future__ import annotations

import grpc


class LpmError(Exception):
    """Base error. `status` is the gRPC code the server answers with."""

    status: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInputError(LpmError):
    status = grpc.StatusCode.INVALID_ARGUMENT


class InvalidImageError(InvalidInputError):
    """The bytes are not a decodable image."""


class NoFaceError(InvalidInputError):
    """The image holds no usable human face."""


class AudioFormatError(InvalidInputError):
    """PCM or WAV data that cannot be used (odd length, bad rate, ...)."""


class NotFoundError(LpmError):
    status = grpc.StatusCode.NOT_FOUND


class FailedPreconditionError(LpmError):
    status = grpc.StatusCode.FAILED_PRECONDITION


class CapacityError(LpmError):
    status = grpc.StatusCode.RESOURCE_EXHAUSTED
