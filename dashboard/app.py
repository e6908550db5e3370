"""The Streamlit entry script: ``streamlit run dashboard/app.py`` (or ``driftwatch dashboard``).

It sets the page up, runs the login gate and the sidebar filters (here, so they
keep their state across pages), then the page the user picked. Before anything can
log, the process's log records get the secrets of the settings redacted
(:mod:`dashboard.logs`: the dashboard password, InfluxDB credentials).
"""

from __future__ import annotations

import streamlit as st

from dashboard import logs, ui
from dashboard.config import load_settings

ui.scrub_forged_widget_state()  # before any widget: a forged widget id breaks session-state reads
settings = load_settings()
logs.setup(settings)  # no secret in any log line of this process (docs/reliability.md)
st.set_page_config(page_title="driftwatch", page_icon=":material/monitoring:", layout="wide")

pages = [
    st.Page(path, title=title, icon=icon, url_path=url, default=(key == "overview"))
    for key, (path, title, icon, url) in ui.PAGES.items()
]
# before login the page list stays hidden (the gate below shows the login form)
page = st.navigation(pages, position="sidebar" if ui.logged_in(settings) else "hidden")
ui.start(page.url_path or "overview", settings)
page.run()
