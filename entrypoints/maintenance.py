"""`timeline rebuild`, `check`, `switch-strategy` and `events`: work on the data of a database."""

from __future__ import annotations

import argparse

from bson import ObjectId

from app.context import AppContext
from app.settings import Settings
from entrypoints.database import StartupError, with_context
from entrypoints.progress import progress


def cmd_rebuild(settings: Settings, args: argparse.Namespace) -> int:
    from app import maintenance
    from app.storage import recorded_settings
    from fanout import switch

    async def run(ctx: AppContext) -> int:
        if args.user and not await maintenance.user_ids(ctx.store, args.user):
            raise StartupError(f"--user: no user {args.user!r}")
        # A changed setting that shapes derived data (TIMELINE_MAX): every strategy's data
        # is rebuilt for every user under the new value, which is then recorded.
        changed_settings = await recorded_settings.mismatches(ctx.store, ctx.settings)
        strategies = [ctx.strategy]
        if changed_settings:
            var = next(iter(changed_settings))
            if args.user:
                raise StartupError(
                    f"--user: {var} differs from the value the data was built with "
                    f"({changed_settings[var][0]}); rebuild every user to change it"
                )
            config = await maintenance.service_config(ctx.store)
            assert config is not None  # mismatches() found a record in it
            names = recorded_settings.derived_strategies(config)
            strategies = [ctx.build_strategy(n) for n in names]
        users = await maintenance.user_ids(ctx.store, args.user)
        for strategy in strategies:
            await strategy.ensure_indexes()
            with progress(f"rebuilding ({strategy.name})") as step:
                # Under author leases: safe beside running workers.
                # A whole rebuild resumes where an interrupted one stopped.
                key = None if args.user else f"rebuild:{strategy.name}"
                changed = await switch.rebuild_leased(
                    ctx.store, strategy, users, step, resume_key=key
                )
            print(f"rebuilt {strategy.name}: {changed} documents changed")
        if changed_settings:
            await recorded_settings.record(ctx.store, ctx.settings)
            for var, (old, new) in changed_settings.items():
                print(f"recorded {var}={new} (was {old}): start the API and workers with it")
        return 0

    return with_context(settings, run)


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from app import maintenance

    async def run(ctx: AppContext) -> int:
        report = await maintenance.check(ctx, args.sample)
        for d in report.drifted:
            print(
                f"drift for {d.handle}: {len(d.missing)} missing {d.missing[:5]}, "
                f"{len(d.extra)} extra {d.extra[:5]}"
            )
        print(
            f"checked {report.checked} timelines ({settings.timeline_strategy}): "
            f"{len(report.drifted)} drifted"
        )
        return 0 if report.ok else 1

    return with_context(settings, run)


def cmd_switch_strategy(settings: Settings, args: argparse.Namespace) -> int:
    from fanout import switch

    async def run(ctx: AppContext) -> int:
        try:
            if args.retire:
                await switch.retire(ctx.store, args.retire)
                print(f"{args.retire} is no longer maintained")
                return 0
            with progress(f"building {args.to}") as step:
                changed = await switch.switch_to(ctx, args.to, step)
        except switch.SwitchError as exc:
            raise StartupError(str(exc)) from None
        print(f"{args.to} is built ({changed} documents written) and active.")
        print(f"Restart the API and the workers with TIMELINE_STRATEGY={args.to}, then run")
        print("`timeline switch-strategy --retire OLD` to stop maintaining the old strategy.")
        return 0

    return with_context(settings, run)


def _object_ids(values: list[str]) -> list[ObjectId]:
    bad = [v for v in values if not ObjectId.is_valid(v)]
    if bad:
        raise StartupError(f"not an event id: {bad[0]!r}")
    return [ObjectId(v) for v in values]


def cmd_events(settings: Settings, args: argparse.Namespace) -> int:
    if args.events_command == "retry":
        if bool(args.all) == bool(args.ids):
            raise StartupError("events retry: give event ids or --all (not both)")
        ids = None if args.all else _object_ids(args.ids)

    async def run(ctx: AppContext) -> int:
        if args.events_command == "retry":
            n = await ctx.queue.retry_dead(ids)
            print(f"re-queued {n} dead event(s)")
            return 0 if ids is None or n == len(ids) else 1
        state = "dead" if args.dead else args.state
        shown = await ctx.queue.reader.list_events(state)
        for e in shown:
            print(
                f"{e['_id']} {e['kind']} author={e['author_id']} attempts={e['attempts']} "
                f"created={e['created_at']:%Y-%m-%dT%H:%M:%SZ} error={e.get('last_error')}"
            )
        total = await ctx.queue.reader.count(state)
        print(
            f"{total} {state} event(s)"
            + (f", first {len(shown)} shown" if total > len(shown) else "")
        )
        return 0

    return with_context(settings, run)
