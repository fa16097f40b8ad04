"""OSC datagrams → engine controls and commands, with no socket (python-osc's dispatcher idea).

Every address the engine accepts (:data:`osc.addresses.TABLE`) maps to one handler:
controls (``kind == "control"``) become :class:`~engine.live.controls.ControlEvent` s that the
generator applies at a frame boundary; commands run an engine method. :func:`check_handlers`
fails, when a dispatcher is built, if a table entry has no handler or a handler no entry.

A datagram is handled in three steps, so that a bundle takes effect whole or not at all:

1. parse it (python-osc's ``OscPacket``; nested bundles are flattened);
2. check every message against the table: address, argument types and count, finiteness,
   range (:func:`~engine.live.controls.check_args`);
3. submit the control events together (the engine checks them against its state, e.g. a mix
   that would use an empty slot), then run the commands in order.

The first thing wrong is answered with one ``/error s`` and stops the datagram: nothing of it
has reached the engine when steps 1–3 refuse it. (A command that fails while it runs, such as
``/record/start`` when already recording, comes after the controls of its bundle were queued.)

Threading: :meth:`OSCDispatcher.handle` runs on the caller's thread (the OSC server's receive
thread) and calls only the engine's thread-safe entry points (``submit``, ``play``, ``pause``,
``panic``, ``load_prompt``, ``status``, ``recorder.start/stop``). ``/prompt/load`` replies
later, from the engine's prompt-loader thread.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pythonosc.osc_packet import OscPacket

from engine.errors import UserError
from engine.live.controls import MAX_SLOTS, SPECS, ControlError, ControlEvent, check_args
from osc.addresses import TABLE, Address, schema_json, table_for
from osc.feedback import info_message, status_messages

Target = tuple[str, int]
Reply = Callable[[str, list, Target], None]
"""``reply(address, args, sender)``: send one message back (to the sender and --feedback)."""
CommandHandler = Callable[[tuple, Target], bool]
"""``handler(args, sender)`` runs a command; False if it failed (and was answered)."""


class HandlerTableError(RuntimeError):
    """The address table and the dispatcher's handlers disagree (a programming error)."""


def check_handlers(table: Mapping[str, Address], commands: Mapping[str, object]) -> None:
    """Every table entry has a handler and every handler a table entry.

    Args:
        table: address → :class:`~osc.addresses.Address` (the accepted addresses).
        commands: address → handler of every command the dispatcher runs. A control's
            handler is the generator's: its address must be one :mod:`engine.live.controls`
            applies.

    Raises:
        HandlerTableError: naming the addresses without a handler or without an entry.
    """
    wanted = {a for a, spec in table.items() if spec.kind == "command"}
    missing = sorted(wanted - set(commands))
    missing += sorted(a for a, spec in table.items() if spec.kind == "control" and a not in SPECS)
    extra = sorted(set(commands) - wanted)
    if missing or extra:
        raise HandlerTableError(f"OSC table without a handler: {missing or 'none'}; "
                                f"handlers without a table entry: {extra or 'none'}")


def parse_datagram(data: bytes) -> list[tuple[str, tuple]]:
    """The messages of one datagram, in order, as ``(address, params)``.

    Raises:
        ControlError: the datagram is not valid OSC.
    """
    try:
        return [(m.message.address, tuple(m.message.params)) for m in OscPacket(data).messages]
    except Exception as e:  # ParseError, and python-osc's own struct/unicode/index errors
        raise ControlError(f"malformed OSC datagram ({type(e).__name__})") from None


def button_args(spec: Address, params: tuple) -> tuple | None:
    """Arguments for ``spec`` once a button's state is taken off; None: ignore the message.

    A button on a control surface sends one value: TouchOSC ``f 1`` on press and ``f 0`` on
    release, Max ``[button]`` → ``prepend`` an int, Pd ``bng`` a float, or an OSC ``T`` / ``F``
    boolean. An address that takes no arguments acts on the press (non-zero, ``T``) and
    ignores the release (0, ``F``); anything else is passed on unchanged (and checked as usual).
    """
    if spec.types or len(params) != 1:
        return params
    value = params[0]
    if value is None or not isinstance(value, (bool, int, float)):
        return params
    return () if value else None


class OSCDispatcher:
    """Turn datagrams into engine calls and replies.

    Args:
        engine: a :class:`~engine.live.engine.LiveEngine` (or anything with its command
            methods: ``submit``, ``play``, ``pause``, ``panic``, ``status``, ``load_prompt``,
            ``recorder``).
        reply: sends one reply (see :data:`Reply`).
        log: console messages (one line each).
    """

    def __init__(self, engine, reply: Reply, log: Callable[[str], None] = print):
        self.engine, self.reply, self.log = engine, reply, log
        self.errors = 0
        self.commands: dict[str, CommandHandler] = {
            "/play": self._play, "/pause": self._pause, "/panic": self._panic,
            "/status": self._status, "/schema": self._schema,
            "/record/start": self._record_start, "/record/stop": self._record_stop,
            "/prompt/load": self._prompt_load, "/prompt/text": self._prompt_text,
            "/scene/save": self._scene_save, "/scene/recall": self._scene_recall,
            "/midi/learn": self._midi_learn,
            "/prime": self._prime, "/prime/file": self._prime_file,
            "/prompt/listen": self._prompt_listen, "/prompt/unlisten": self._prompt_unlisten,
            "/device/reopen": self._device_reopen,
        }
        self.midi = None  # an osc.midi.MidiMapper when --midi is given
        check_handlers(TABLE, self.commands)
        self.num_slots = int(getattr(engine, "num_slots", MAX_SLOTS))
        self.table = table_for(self.num_slots)  # /prompt/load's slot range is the engine's

    def handle(self, data: bytes, sender: Target) -> bool:
        """Act on one datagram from ``sender``; False if it was refused (``/error`` sent)."""
        try:
            checked = self._check(self.table, parse_datagram(data))
        except ControlError as e:
            return self.error(sender, str(e))
        events = [ControlEvent(spec.address, args) for spec, args in checked
                  if spec.kind == "control"]
        if events:
            try:
                self.engine.submit(events)
            except ControlError as e:
                return self.error(sender, str(e))
        unsupported = getattr(self.engine, "unsupported", {})  # this model family lacks them
        for spec, args in checked:
            if spec.kind != "command":
                continue
            if spec.address in unsupported:
                return self.error(sender, f"{spec.address}: {unsupported[spec.address]}")
            if not self.commands[spec.address](args, sender):
                return False
        return True

    def error(self, sender: Target, message: str) -> bool:
        """Count, log and answer an error with ``/error s``; returns False (refused)."""
        self.errors += 1
        self.log(f"osc: {message}")
        self.reply("/error", [message], sender)
        return False

    @staticmethod
    def _check(table: Mapping[str, Address],
               messages: list[tuple[str, tuple]]) -> list[tuple[Address, tuple]]:
        """Each message's table entry and checked arguments (button releases left out).

        Raises:
            ControlError: the first unknown address or bad argument list.
        """
        checked = []
        for address, params in messages:
            spec = table.get(address)
            if spec is None:
                raise ControlError(f"unknown address {address}; send /schema for the list")
            args = button_args(spec, params)
            if args is not None:
                checked.append((spec, check_args(spec, args)))
        return checked

    # -- commands (each returns False if it failed and was answered) -------------------------
    def _play(self, args: tuple, sender: Target) -> bool:
        self.engine.play()
        return True

    def _pause(self, args: tuple, sender: Target) -> bool:
        self.engine.pause()
        return True

    def _panic(self, args: tuple, sender: Target) -> bool:
        self.engine.panic()
        return True

    def _status(self, args: tuple, sender: Target) -> bool:
        for address, values in [*status_messages(self.engine.status()),
                                 info_message(self.engine.info())]:
            self.reply(address, values, sender)
        return True

    def _schema(self, args: tuple, sender: Target) -> bool:
        self.reply("/schema", [schema_json(self.num_slots)], sender)
        return True

    def _record_start(self, args: tuple, sender: Target) -> bool:
        try:
            self.engine.recorder.start(args[0] if args else None)
        except UserError as e:
            return self.error(sender, f"/record/start: {e}")
        return True

    def _record_stop(self, args: tuple, sender: Target) -> bool:
        try:
            self.engine.recorder.stop()
        except UserError as e:
            return self.error(sender, f"/record/stop: {e}")
        return True

    def _scene_save(self, args: tuple, sender: Target) -> bool:
        try:
            path = self._scenes("/scene/save").save(args[0])
        except UserError as e:
            return self.error(sender, f"/scene/save: {e}")
        self.reply("/scene/saved", [str(path)], sender)
        return True

    def _scene_recall(self, args: tuple, sender: Target) -> bool:
        try:
            self._scenes("/scene/recall").recall(args[0])
        except UserError as e:  # ControlError included: the scene does not fit the engine
            return self.error(sender, f"/scene/recall: {e}")
        self.reply("/scene/recalled", [args[0]], sender)
        return True

    def _midi_learn(self, args: tuple, sender: Target) -> bool:
        if self.midi is None:
            return self.error(sender, "/midi/learn: no MIDI input (start with --midi PORT)")
        try:
            self.midi.learn(args[0])
        except UserError as e:
            return self.error(sender, f"/midi/learn: {e}")
        return True

    def _scenes(self, address: str):
        scenes = getattr(self.engine, "scenes", None)
        if scenes is None:
            raise UserError("this engine keeps no scenes")
        return scenes

    def _prompt_load(self, args: tuple, sender: Target) -> bool:
        def done(slot: int, path: str) -> None:  # on the loader thread
            self.log(f"prompt: loaded {path} into slot {slot}")
            self.reply("/prompt/loaded", [slot, path], sender)

        return self._answered("/prompt/load", lambda failed: self.engine.load_prompt(
            *args, done=done, failed=failed), sender)

    def _prompt_text(self, args: tuple, sender: Target) -> bool:
        def done(slot: int, text: str) -> None:  # on the text worker
            self.log(f"prompt: slot {slot} holds the text {text!r}")
            self.reply("/prompt/loaded", [slot, text], sender)

        return self._answered("/prompt/text", lambda failed: self.engine.set_text(
            *args, done=done, failed=failed), sender)

    def _device_reopen(self, args: tuple, sender: Target) -> bool:
        def done(name: str, rate: int) -> None:  # on the reopen thread
            self.reply("/device/opened", [name, int(rate)], sender)

        return self._answered("/device/reopen", lambda failed: self.engine.reopen_device(
            done=done, failed=failed), sender)

    def _prompt_listen(self, args: tuple, sender: Target) -> bool:
        try:
            seconds = self.engine.listen(args[0], args[1] if len(args) > 1 else None)
        except UserError as e:
            return self.error(sender, f"/prompt/listen: {e}")
        self.log(f"listen: slot {args[0]} follows the input ({seconds:g} s analysed)")
        self.reply("/prompt/listening", [args[0], float(seconds)], sender)
        return True

    def _prompt_unlisten(self, args: tuple, sender: Target) -> bool:
        if not self.engine.unlisten(args[0]):
            return self.error(sender, f"/prompt/unlisten: slot {args[0]} is not listening")
        self.log(f"listen: slot {args[0]} frozen at its last vector")
        return True

    def _prime(self, args: tuple, sender: Target) -> bool:
        return self._answered("/prime", lambda failed: self.engine.prime(
            args[0], self._primed(sender), failed), sender)

    def _prime_file(self, args: tuple, sender: Target) -> bool:
        return self._answered("/prime/file", lambda failed: self.engine.prime_file(
            args[0], self._primed(sender), failed), sender)

    def _primed(self, sender: Target):
        return lambda path, rows: self.reply("/primed", [path, rows], sender)

    def _answered(self, address: str, start, sender: Target) -> bool:
        """Run ``start(failed)``, a command answered now or later from a worker thread;
        ``failed(message)`` sends ``/error`` (``address: message``). False if it failed at
        once."""
        refused: list[str] = []

        def failed(message: str) -> None:  # now, or from the worker thread
            refused.append(message)
            self.error(sender, f"{address}: {message}")

        start(failed)
        return not refused
