"""Top-level pytest hooks: which package modules the doctest collection leaves out.

``--doctest-modules`` (pyproject.toml) imports every module under ``detectors/``, ``streams/``
and ``dashboard/`` to run its docstring examples. The Streamlit scripts below draw a page when
imported, so they are not collected; their behaviour is tested through a real Streamlit server
(tests/dashboard).
"""

collect_ignore = ["dashboard/app.py", "dashboard/server.py", "dashboard/views"]
