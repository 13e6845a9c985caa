"""The deploy's one exception, and how AWS errors are recognised and explained."""
from urllib.parse import urlparse

from botocore.exceptions import (
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
)

CREDENTIALS_HELP = (
    "Configure credentials with `aws configure` (or set AWS_PROFILE, or AWS_ACCESS_KEY_ID and "
    "AWS_SECRET_ACCESS_KEY). For the local stack, point AWS_ENDPOINT_URL at it and set any fake "
    "keys, e.g. AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing."
)
_REJECTED_CREDENTIALS = {
    "InvalidClientTokenId", "UnrecognizedClientException", "SignatureDoesNotMatch",
    "ExpiredToken", "ExpiredTokenException", "InvalidAccessKeyId", "AuthFailure",
}
_DENIED = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}
# Codes an emulator answers for an operation it does not implement. moto's server answers an
# unknown operation with a bare HTTP 500 page, which botocore reports as code "500".
_UNSUPPORTED_CODES = {"500", "501", "NotImplemented", "InvalidAction", "UnknownOperationException"}
_AWS_HOST_SUFFIXES = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")


class DeployError(Exception):
    """A deploy step cannot go on; the message says what to do about it."""


def error_code(exc):
    """The AWS error code of a botocore ClientError, else None."""
    if isinstance(exc, ClientError):
        return exc.response.get("Error", {}).get("Code")
    return None


def has_code(exc, *codes):
    """True when ``exc`` is a ClientError with one of ``codes``."""
    return error_code(exc) in codes


def is_aws_endpoint(client):
    """True when the client talks to AWS itself (not an emulator behind AWS_ENDPOINT_URL)."""
    host = urlparse(client.meta.endpoint_url).hostname or ""
    return host.endswith(_AWS_HOST_SUFFIXES)


def is_unsupported_operation(exc, client):
    """True only when an emulator says it lacks the operation just called.

    moto in-process raises NotImplementedError (AWS never does); moto's server answers HTTP 500.
    A ClientError counts only off AWS, so a real AWS failure is never mistaken for this.
    """
    if isinstance(exc, NotImplementedError):
        return True
    return isinstance(exc, ClientError) and not is_aws_endpoint(client) and (
        error_code(exc) in _UNSUPPORTED_CODES
    )


def replace_if_unsupported(exc, client, delete, create):
    """``delete()`` then ``create()``, only when an emulator lacks the update call just made;
    otherwise re-raise ``exc``.

    AWS always has the update calls, so there a failed update is never turned into a delete.
    """
    if not is_unsupported_operation(exc, client):
        raise exc
    delete()
    create()


def explain(exc):
    """A DeployError saying what went wrong and what to do, for a botocore exception.

    Returns None for exceptions it has nothing useful to add to.
    """
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return DeployError("No usable AWS credentials (%s). %s" % (exc, CREDENTIALS_HELP))
    if isinstance(exc, EndpointConnectionError):
        return DeployError(
            "Cannot reach %s. If AWS_ENDPOINT_URL points at a local stack, start it first; "
            "otherwise check the network and --region." % exc.kwargs.get("endpoint_url", "the endpoint")
        )
    code = error_code(exc)
    if code is None:
        return None
    message = exc.response.get("Error", {}).get("Message", "")
    operation = getattr(exc, "operation_name", "the call")
    if code in _REJECTED_CREDENTIALS:
        return DeployError(
            "AWS rejected the credentials (%s: %s). Refresh them (e.g. `aws sso login`) or check "
            "the keys. %s" % (code, message, CREDENTIALS_HELP)
        )
    if code in _DENIED:
        return DeployError(
            "%s was denied (%s). The identity running the deploy needs permission for it; "
            "see `aws sts get-caller-identity` for who that is." % (operation, message)
        )
    return DeployError("%s failed: %s: %s" % (operation, code, message))
