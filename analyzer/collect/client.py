"""A small HTTP client for SGLang's native endpoints (standard library only).

>>> c = SGLangClient("http://127.0.0.1:30000")          # doctest: +SKIP
>>> c.server_info()["tp_size"]                           # doctest: +SKIP
1

Endpoints (SGLang ``python/sglang/srt/entrypoints/http_server.py``):

* ``GET /get_server_info``: ``dataclasses.asdict(server_args)`` merged with the scheduler
  info (``max_total_num_tokens``...), ``internal_states`` (one per DP rank) and ``version``.
* ``GET /metrics``: Prometheus text, only when the server runs with ``--enable-metrics``.
* ``POST /start_profile``: a ``ProfileReqInput`` JSON body (``output_dir``, ``start_step``,
  ``num_steps``, ``activities``, ``profile_by_stage``, ``with_stack``, ``record_shapes``,
  ``merge_profiles``...); answers ``Start profiling.`` and, when a capture is already running,
  an error status with ``Profiling is already in progress. Call /stop_profile first.``
* ``POST /stop_profile``: returns once the ranks have written their traces.

Every failure becomes a one-line :class:`~analyzer.model.BadInputError`.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from analyzer.errors import BadInputError

#: Seconds to wait for an answer to a control request (stop_profile waits for trace export).
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HttpAnswer:
    status: int
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def normalize_url(url: str) -> str:
    """``host:port`` or ``http://host:port/`` -> ``http://host:port``; reject other schemes."""
    url = url.strip()
    if "://" not in url:
        url = "http://" + url
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise BadInputError(f"bad --url {url!r}: expected http://HOST:PORT")
    return f"{parsed.scheme}://{parsed.netloc}{parsed.path.rstrip('/')}"


def _one_line(text: str, limit: int = 200) -> str:
    """A server's error body squeezed to one short line (JSON ``message``/``detail`` preferred)."""
    text = text.strip()
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        for key in ("message", "detail", "error"):
            val = doc.get(key)
            if isinstance(val, dict):
                val = val.get("message")
            if isinstance(val, str) and val:
                text = val
                break
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SGLangClient:
    """Talks to one SGLang server. ``api_key`` is sent as ``Authorization: Bearer``."""

    def __init__(
        self, url: str, *, api_key: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
    ):
        self.url = normalize_url(url)
        self.api_key = api_key
        self.timeout_s = timeout_s

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> HttpAnswer:
        """One request; non-2xx answers are returned, transport failures raise BadInputError."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if self.api_key:
            req.add_header("Authorization", f"Bearer {self.api_key}")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return HttpAnswer(resp.status, resp.read())
        except urllib.error.HTTPError as exc:
            try:
                payload = exc.read()
            except OSError:
                payload = b""
            return HttpAnswer(exc.code, payload)
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, ConnectionRefusedError):
                raise BadInputError(
                    f"cannot reach the SGLang server at {self.url}: connection refused "
                    "(is it running, and are host and port right?)"
                ) from None
            if isinstance(reason, (socket.timeout, TimeoutError)):
                raise BadInputError(
                    f"the SGLang server at {self.url} did not answer {method} {path} within {timeout:g} s"
                ) from None
            raise BadInputError(f"cannot reach the SGLang server at {self.url}: {reason}") from None
        except TimeoutError:
            raise BadInputError(
                f"the SGLang server at {self.url} did not answer {method} {path} within {timeout:g} s"
            ) from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            raise BadInputError(
                f"connection to the SGLang server at {self.url} failed: {exc}"
            ) from None

    def _fail(self, what: str, ans: HttpAnswer) -> BadInputError:
        detail = _one_line(ans.text) or "(empty answer)"
        hint = ""
        if ans.status in (401, 403):
            hint = " (the server wants an API key: pass --api-key or set SGLANG_API_KEY)"
        elif ans.status == 404:
            hint = " (is this an SGLang server? the endpoint does not exist)"
        return BadInputError(f"{what} failed: HTTP {ans.status} from {self.url}: {detail}{hint}")

    def server_info(self) -> dict[str, Any]:
        """``GET /get_server_info`` as a dict."""
        ans = self.request("GET", "/get_server_info")
        if ans.status != 200:
            raise self._fail("GET /get_server_info", ans)
        try:
            doc = json.loads(ans.body)
        except ValueError:
            raise BadInputError(
                f"{self.url}/get_server_info did not return JSON: is this an SGLang server?"
            ) from None
        if not isinstance(doc, dict):
            raise BadInputError(f"{self.url}/get_server_info did not return a JSON object")
        return doc

    def metrics_text(self) -> str | None:
        """``GET /metrics`` text, or None when the server exports no metrics (404)."""
        ans = self.request("GET", "/metrics")
        if ans.status == 404:
            return None
        if ans.status != 200:
            raise self._fail("GET /metrics", ans)
        return ans.text

    def start_profile(self, body: Mapping[str, Any], *, timeout_s: float | None = None) -> str:
        """``POST /start_profile``; returns the server's answer text.

        Some SGLang versions answer a ``num_steps`` request only once the steps ran and the
        traces are written: give such a call the whole capture's ``timeout_s``.
        """
        ans = self.request("POST", "/start_profile", body, timeout_s=timeout_s)
        if 200 <= ans.status < 300:
            return ans.text
        detail = _one_line(ans.text)
        if "already in progress" in detail.lower():
            raise BadInputError(
                f"profiling is already running on {self.url} ({detail}); stop it with "
                f"`curl -X POST {self.url}/stop_profile` (that writes its traces) and try again"
            )
        err = self._fail("POST /start_profile", ans)
        if ans.status == 500:
            err = BadInputError(
                f"{err} (SGLang answers 500 when a capture is already running: stop it with "
                f"`curl -X POST {self.url}/stop_profile` and try again)"
            )
        raise err

    def stop_profile(self, *, timeout_s: float | None = None) -> str:
        """``POST /stop_profile``; returns after the server exported the traces."""
        ans = self.request("POST", "/stop_profile", {}, timeout_s=timeout_s)
        if 200 <= ans.status < 300:
            return ans.text
        raise self._fail("POST /stop_profile", ans)
