"""The OHIF viewer's ``app-config.js`` for a DICOMweb root (and, optionally, a sign-in).

The prebuilt viewer (``@ohif/app/dist``) reads ``window.config`` from ``app-config.js``.
The gateway's ``/viewer`` (``api/viewer.py``) serves the text produced here in place of
the file shipped in the package, so the installed package is never modified.

With ``login`` the viewer signs users in at the gateway's own authorization server
(authorization code + PKCE through OHIF's OpenID Connect client, oidc-client-ts), sends the
access token as a bearer token, and renews it with the refresh token before it expires. The
authorization server metadata is given inline: the gateway issues OAuth tokens, not ID
tokens, so the viewer asks for no ``openid`` scope and needs no discovery document.

Usage as a script (a viewer served elsewhere, without sign-in)::

    python -m server.viewer_config http://127.0.0.1:8042/dicom-web > app-config.js
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from typing import Any

VIEWER_CLIENT_ID = "imaging-gateway-viewer"
IN_SITU_NOTICE = (
    "This study is shared under an in-situ processing agreement: its metadata is shown "
    "here, its images are not released to viewers."
)
# The gateway answers 403 with error="insufficient_scope" and a description naming in-situ
# processing when an agreement allows metadata but not pixels; OHIF would show black
# viewports and a generic error. This watches the viewer's DICOMweb requests and says why.
_IN_SITU_SCRIPT = """
(function () {
  var notice = %(notice)s;
  function show() {
    if (document.getElementById('gateway-in-situ-notice')) return;
    var box = document.createElement('div');
    box.id = 'gateway-in-situ-notice';
    box.setAttribute('role', 'alert');
    box.style.cssText = 'position:fixed;top:56px;left:50%%;transform:translateX(-50%%);' +
      'z-index:10000;max-width:40em;padding:10px 16px;background:#3b2a00;color:#ffe08a;' +
      'border:1px solid #d39e00;border-radius:6px;font:14px sans-serif';
    box.textContent = notice + ' ';
    var close = document.createElement('button');
    close.textContent = 'Close';
    close.style.cssText = 'margin-left:8px';
    close.onclick = function () { box.remove(); };
    box.appendChild(close);
    document.body.appendChild(box);
    var path = location.pathname + location.search;
    var timer = setInterval(function () {
      if (location.pathname + location.search !== path) { box.remove(); clearInterval(timer); }
    }, 500);
  }
  function check(status, challenge) {
    if (status === 403 && /in-situ processing/.test(challenge || '')) show();
  }
  var open = XMLHttpRequest.prototype.open;
  XMLHttpRequest.prototype.open = function () {
    this.addEventListener('loadend', function () {
      check(this.status, this.getResponseHeader('WWW-Authenticate'));
    });
    return open.apply(this, arguments);
  };
  var fetch0 = window.fetch;
  window.fetch = function () {
    return fetch0.apply(this, arguments).then(function (r) {
      check(r.status, r.headers.get('WWW-Authenticate'));
      return r;
    });
  };
})();
"""


@dataclass(frozen=True)
class Login:
    """Sign-in at the gateway's authorization server (``issuer``)."""

    issuer: str
    client_id: str = VIEWER_CLIENT_ID
    scope: str = "system/*.rs"
    token_lifetime: int = 300  # seconds; the viewer renews a third of it (at most 60 s) early

    def oidc(self) -> list[dict[str, Any]]:
        issuer = self.issuer.rstrip("/")
        return [
            {
                "authority": issuer,
                "client_id": self.client_id,
                "redirect_uri": "/callback",
                # OHIF routes this path without its basename: "/" would shadow the viewer's
                # own routes under /viewer
                "post_logout_redirect_uri": "/signed-out",
                "response_type": "code",
                "scope": self.scope,
                "automaticSilentRenew": True,
                "accessTokenExpiringNotificationTimeInSeconds": min(60, self.token_lifetime // 3),
                "revokeAccessTokenOnSignout": True,
                "loadUserInfo": False,
                "metadata": {
                    "issuer": issuer,
                    "authorization_endpoint": f"{issuer}/oauth/authorize",
                    "token_endpoint": f"{issuer}/oauth/token",
                    "revocation_endpoint": f"{issuer}/oauth/logout",
                    "end_session_endpoint": f"{issuer}/oauth/logout",
                    "jwks_uri": f"{issuer}/oauth/jwks",
                },
            }
        ]


def data_source_configuration(
    dicomweb_root: str, name: str = "gateway", *, include_field: bool = True
) -> dict[str, Any]:
    root = dicomweb_root.rstrip("/")
    return {
        "friendlyName": "Imaging gateway (DICOMweb)",
        "name": name,
        "wadoUriRoot": root,
        "qidoRoot": root,
        "wadoRoot": root,
        "qidoSupportsIncludeField": include_field,
        "supportsReject": False,
        "supportsStow": False,
        "imageRendering": "wadors",
        "thumbnailRendering": "wadors",
        "enableStudyLazyLoad": True,
        "supportsFuzzyMatching": True,
        "supportsWildcard": True,
        "staticWado": False,
        "singlepart": "bulkdata,video",
        "bulkDataURI": {"enabled": True, "relativeResolution": "studies"},
        "omitQuotationForMultipartRequest": True,
        "dicomUploadEnabled": False,
    }


def app_config_js(
    dicomweb_root: str,
    *,
    max_web_workers: int = 2,
    include_field: bool = True,
    router_basename: str = "/",
    login: Login | None = None,
) -> str:
    """Return the JavaScript source of an ``app-config.js``."""
    config: dict[str, Any] = {
        "routerBasename": router_basename,
        "extensions": [],
        "modes": [],
        "customizationService": {},
        "showStudyList": True,
        "maxNumberOfWebWorkers": max_web_workers,
        "showWarningMessageForCrossOrigin": False,
        "showCPUFallbackMessage": False,
        "showLoadingIndicator": True,
        "strictZSpacingForVolumeViewport": True,
        "investigationalUseDialog": {"option": "never"},
        "maxNumRequests": {"interaction": 100, "thumbnail": 5, "prefetch": 10},
        "showErrorDetails": "always",
        "defaultDataSourceName": "gateway",
        "dataSources": [
            {
                "namespace": "@ohif/extension-default.dataSourcesModule.dicomweb",
                "sourceName": "gateway",
                "configuration": data_source_configuration(
                    dicomweb_root, include_field=include_field
                ),
            }
        ],
    }
    if login is not None:
        config["oidc"] = login.oidc()
    body = json.dumps(config, indent=2)
    script = _IN_SITU_SCRIPT % {"notice": json.dumps(IN_SITU_NOTICE)}
    return f"/** Generated by the imaging gateway: OHIF viewer configuration. */\nwindow.config = {body};\n{script}"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(app_config_js(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
