"""The dashboard pages, one script each, run by ``st.navigation`` from ``dashboard/app.py``.

Not called ``pages/``: Streamlit treats a ``pages/`` folder beside the entry script as a
legacy (v1) multipage app on the first run of a server process (and on every AppTest
run) and would run a page script without the entry script, so without login and filters.
"""
