"""The Blueprint every API module uses: flask-smorest's, with Cairn's JSON body parsing.

Bodies declared with `@blp.arguments` are read by `read_json_body` like the hand-parsed
ingestion paths: one set of rules (size after gzip, NUL, malformed JSON, a missing body is a
400) wherever a body is parsed, whatever its Content-Type says.
"""

from __future__ import annotations

from typing import Any

import flask_smorest
from webargs.flaskparser import FlaskParser

from app.api.bodies import read_json_body
from app.errors import BadRequest, InvalidInput


class CairnParser(FlaskParser):
    """webargs' Flask parser reading JSON bodies through `read_json_body`."""

    def load_json(self, req: Any, schema: Any) -> Any:
        """The parsed body. A malformed body is a 400; a value the JSON could hold but Cairn
        cannot (NUL...) is a 422 naming its field, like the schema's own checks."""
        try:
            return read_json_body()
        except BadRequest as err:
            if err.errors and "body" not in err.errors:
                raise InvalidInput(err.message, err.errors) from None
            raise


class Blueprint(flask_smorest.Blueprint):
    """A flask-smorest blueprint whose `arguments` parse bodies with `CairnParser`."""

    ARGUMENTS_PARSER = CairnParser()
