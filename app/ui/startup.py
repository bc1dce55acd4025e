"""Getting the model running: find it (or have the first-run page fetch it), load it, load it again."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import replace

from xvlm_core.errors import problem_of  # torch-free
from xvlm_core.load_options import NONE_GIVEN, LoadOptions

from app.chat.controller import ChatController
from app.model.first_run import FirstRunPage, HubDownloads, local_folder, locate_model
from app.model.worker import LoadRequest
from app.settings import AppSettings, Settings

log = logging.getLogger(__name__)


class Page(enum.Enum):
    """What the window shows while the model is found: a neutral page until start-up knows, then one of the others."""

    STARTING = "starting"
    FIRST_RUN = "first_run"
    CHAT = "chat"


class ModelStartup:
    """The start-up flow: locate -> (first-run page: download, pick a folder or a server) -> load, and reloads.

    `show_page(page)` asks the window to show that page.
    """

    def __init__(self, settings: AppSettings, controller: ChatController, downloads: HubDownloads,
                 first_run: FirstRunPage, show_page: Callable[[Page], None]):
        self.settings = settings
        self.controller = controller
        self.downloads = downloads
        self.first_run = first_run
        self.show_page = show_page
        self._overrides = LoadOptions()  # from the command line, for this run only
        self._current_model: str | None = None  # what was last loaded (a folder or a repo id)
        self._asked: LoadOptions | None = None  # start()'s options, last time
        self._starts = 0  # how many times start() began: a later one takes over from an earlier one still waiting
        self._tasks: set[asyncio.Task] = set()

    @property
    def model_of_this_run(self) -> str:
        """The model loaded for this run only, as the command line or another launch named it instead of the
        settings' model: "" when the settings' model (or a server's) is the one loaded."""
        given, settings = self._overrides.model, self.settings.current
        if settings.uses_server or not given or given == settings.model:
            return ""
        return self._current_model or ""

    def first_page(self, options: LoadOptions = NONE_GIVEN) -> Page:
        """The page to show before `start` runs, decided without waiting for anything: the chat when the model is
        on a server or in a folder here, else the neutral page until the hub's cache has been looked at."""
        model = options.model or self.settings.current.model
        return Page.CHAT if self.settings.current.uses_server or local_folder(model) else Page.STARTING

    async def start(self, options: LoadOptions = NONE_GIVEN) -> None:
        """Find the model (or have it fetched on the first-run page), then load it. Options given override settings.

        The first-run page gives way when a model server is chosen meanwhile; that settings change loads it."""
        self._asked = options
        model = options.model or self.settings.current.model
        self._overrides = options
        self._starts += 1
        this_start = self._starts
        if self.settings.current.uses_server:
            self.show_page(Page.CHAT)
            self._load(model)  # the server has the model: nothing to find or download here
            return
        try:
            target, spec = await asyncio.get_running_loop().run_in_executor(None, locate_model, model, self.downloads)
        except Exception as exc:  # the model hub's lookup: report it, and offer the settings
            log.exception("looking for the model failed")
            self.show_page(Page.CHAT)
            self.controller.fail_load(problem_of(exc))
            return
        if this_start != self._starts:
            return  # the settings changed meanwhile (a server chosen), and a later start took over
        if target is None:
            self.show_page(Page.FIRST_RUN)
            target = await self.first_run.obtain(spec, resume=self.settings.current.download_started)
            if target is None or this_start != self._starts:  # a model server was chosen instead
                return
            if self.first_run.picked_folder:
                self.settings.update(model=target)
        self.show_page(Page.CHAT)
        self._load(target)

    def start_again(self, options: LoadOptions) -> bool:
        """Another launch named a model or its options: start with those, unless it asked for what this one did.
        False when it changes nothing."""
        if options == self._asked:
            return False
        task = asyncio.ensure_future(self.start(options))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def reload(self) -> None:
        """Load the model again (after a failure, or with new settings); look for it first if it never loaded."""
        if self._current_model is None:
            task = asyncio.ensure_future(self.start())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            self._load(self._current_model)

    def settings_changed(self, old: Settings, new: Settings) -> None:
        """Reload when the model, device, precision or server changed; the command line's choices end there.

        A model server turned on while the first-run page waits for the model: that page gives way to the chat."""
        if old.model_changed(new):
            self._overrides = LoadOptions()
            if new.model != old.model:
                self._current_model = None
            if new.uses_server:
                self.first_run.give_way()
            self.reload()

    def _load(self, model: str) -> None:
        settings, overrides = self.settings.current, self._overrides
        self._current_model = model
        if settings.uses_server:
            self.controller.load_model(LoadRequest(LoadOptions(model=settings.server_model), server=settings.server_url,
                                                   api_key=settings.server_api_key))  # the worker adds the keyring's
            return
        self.controller.load_model(LoadRequest(replace(overrides, model=model).over(settings.load_options)))
