"""Generate the OHIF viewer's ``app-config.js`` for a given DICOMweb root.

The prebuilt viewer (``@ohif/app/dist``) reads ``window.config`` from
``/app-config.js``. The static server in ``ohif_server.py`` serves the text
produced here in place of the file shipped in the package, so the installed
package is never modified.

Usage as a script::

    python ohif_config.py http://127.0.0.1:8042/dicom-web > app-config.js
"""

from __future__ import annotations

import json
import sys


def data_source_configuration(
    dicomweb_root: str, name: str = "gateway", *, include_field: bool = True
) -> dict:
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
    dicomweb_root: str, *, max_web_workers: int = 2, include_field: bool = True
) -> str:
    """Return the JavaScript source of an ``app-config.js``."""
    config = {
        "routerBasename": "/",
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
    body = json.dumps(config, indent=2)
    return (
        "/** Generated for end-to-end tests: OHIF viewer against a DICOMweb root. */\n"
        f"window.config = {body};\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    sys.stdout.write(app_config_js(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
