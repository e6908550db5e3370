"""The Streamlit entry script: ``streamlit run dashboard/app.py`` (or ``driftwatch dashboard``).

It sets the page up, runs the login gate and the sidebar filters (here, so they
keep their state across pages), then the page the user picked.
"""

from __future__ import annotations

import streamlit as st

from dashboard import ui
from dashboard.config import load_settings

st.set_page_config(page_title="driftwatch", page_icon=":material/monitoring:", layout="wide")

pages = [
    st.Page(path, title=title, icon=icon, url_path=url, default=(key == "overview"))
    for key, (path, title, icon, url) in ui.PAGES.items()
]
# before login the page list stays hidden (the gate below shows the login form)
settings = load_settings()
page = st.navigation(pages, position="sidebar" if ui.logged_in(settings) else "hidden")
ui.start(page.url_path or "overview", settings)
page.run()
