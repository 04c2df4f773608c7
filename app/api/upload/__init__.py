"""The upload path, from a request's first header to a stored task.

In the order a request meets them:

- `body_limit`: the middleware that refuses a body over the upload limit, or arriving
  slower than the minimum rate, while it streams in.
- `route`: the route classes that judge the caller and the Content-Type on the headers
  alone (`headers`, `json_body` for the routes that take JSON).
- `reception`: the form received within the upload memory budget, into memory
  (`form_parser` into a `part_buffer`) or spooled to disk by Starlette, under the caps
  of `limits`.
- `fields` and `intake`: the form's fields as FastAPI declares them, then the upload
  checked, read and stored as a task (`errors` for its refusals).

The memory budget itself (`app.upload_memory`) is a resource of the process, held by
`app.runtime` below the API, so it lives outside this package.

Routers and the composition root import from here; the modules are the package's own.
"""

from app.api.upload.body_limit import UploadSizeLimit
from app.api.upload.fields import UPLOAD_RESPONSES, ResourceUploadDep, UploadDep
from app.api.upload.headers import require_multipart
from app.api.upload.intake import create_from_upload
from app.api.upload.json_body import capped_body
from app.api.upload.limits import UPLOAD_FORM_LIMITS
from app.api.upload.route import LegacyRoute, ResourceRoute

__all__ = [
    "UPLOAD_FORM_LIMITS",
    "UPLOAD_RESPONSES",
    "LegacyRoute",
    "ResourceRoute",
    "ResourceUploadDep",
    "UploadDep",
    "UploadSizeLimit",
    "capped_body",
    "create_from_upload",
    "require_multipart",
]
