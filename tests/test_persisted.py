"""The method-level cache: @persisted, PersistedWork, PersistableContainer, Deallocatable."""

from __future__ import annotations

import copy
import os
import pickle
from pathlib import Path
from typing import Any, Optional

import pytest

from stashworks import (
    Deallocatable,
    JsonSerializer,
    PersistableContainer,
    PersistedWork,
    PersistError,
    SerializationError,
    StashCorruptError,
    StashError,
    StashWriteError,
    dealloc,
    persisted,
)

# -- owners (module level, so they pickle) ------------------------------------


class Counter:
    """Counts how often each decorated method really runs."""

    def __init__(self, n: int = 5, path: Optional[Path] = None, **options: Any) -> None:
        self.n = n
        self.calls = 0
        if path is not None:
            self._doubled = PersistedWork(path, self, **options)

    @property
    @persisted('_doubled')
    def doubled(self) -> int:
        self.calls += 1
        return self.n * 2


class Nothing:
    def __init__(self, path: Optional[Path] = None) -> None:
        self.calls = 0
        if path is not None:
            self._none = PersistedWork(path, self)

    @property
    @persisted('_none')
    def none(self) -> None:
        self.calls += 1
        return None


class Failing:
    def __init__(self, path: Path) -> None:
        self.calls = 0
        self._value = PersistedWork(path, self)

    @property
    @persisted('_value')
    def value(self) -> int:
        self.calls += 1
        raise ValueError('no value today')


class Unpicklable:
    def __init__(self, path: Path) -> None:
        self._value = PersistedWork(path, self)

    @property
    @persisted('_value')
    def value(self) -> Any:
        return lambda: 1


class Container(PersistableContainer):
    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = {'kept': 0, 'dropped': 0}

    @property
    @persisted('_kept')
    def kept(self) -> int:
        self.calls['kept'] += 1
        return self.n + 1

    @property
    @persisted('_dropped', transient=True)
    def dropped(self) -> int:
        self.calls['dropped'] += 1
        return self.n + 2


class Resource(Deallocatable):
    def __init__(self) -> None:
        self.freed = 0

    def deallocate(self) -> None:
        super().deallocate()
        self.freed += 1


class ResourceOwner(PersistableContainer):
    @property
    @persisted('_resource')
    def resource(self) -> Resource:
        return Resource()


class Options(PersistableContainer):
    _PERSISTABLE_TRANSIENT_ATTRIBUTES = ('handle',)
    _PERSISTABLE_REMOVE_ATTRIBUTES = ('scratch',)
    _PERSISTABLE_PROPERTIES = ('warm',)

    def __init__(self) -> None:
        self.handle = 'open handle'
        self.scratch = 'scratch data'
        self.warm_calls = 0

    @property
    @persisted('_warm')
    def warm(self) -> str:
        self.warm_calls += 1
        return 'warmed'


# -- instance caching ----------------------------------------------------------


def test_method_runs_once_per_instance() -> None:
    inst = Counter(5)
    assert (inst.doubled, inst.doubled, inst.doubled) == (10, 10, 10)
    assert inst.calls == 1


def test_instances_do_not_share_values_by_default() -> None:
    a, b = Counter(5), Counter(7)
    assert (a.doubled, b.doubled) == (10, 14)
    assert (a.calls, b.calls) == (1, 1)


def test_none_result_is_cached_like_any_value() -> None:
    inst = Nothing()
    assert inst.none is None
    assert inst.none is None
    assert inst.calls == 1


def test_method_with_arguments_receives_them_on_the_computing_call() -> None:
    class Scaled:
        @persisted('_scaled')
        def scaled(self, factor: int, offset: int = 0) -> int:
            return 10 * factor + offset

    inst = Scaled()
    assert inst.scaled(3, offset=1) == 31
    assert inst.scaled(9) == 31


def test_decorated_method_keeps_name_and_docstring() -> None:
    class Documented:
        @persisted('_value')
        def value(self) -> int:
            """The answer."""
            return 42

    assert Documented.value.__name__ == 'value'
    assert Documented.value.__doc__ == 'The answer.'


def test_raising_method_caches_nothing_and_runs_again() -> None:
    class Flaky:
        calls = 0

        @property
        @persisted('_value')
        def value(self) -> int:
            type(self).calls += 1
            if type(self).calls == 1:
                raise RuntimeError('first call fails')
            return 7

    inst = Flaky()
    with pytest.raises(RuntimeError):
        _ = inst.value
    assert not inst._value.is_set()
    assert inst.value == 7


def test_method_error_is_not_chained_to_the_cache_miss() -> None:
    class Broken:
        @property
        @persisted('_value')
        def value(self) -> int:
            raise RuntimeError('broken')

    with pytest.raises(RuntimeError) as info:
        _ = Broken().value
    assert info.value.__context__ is None


def test_attribute_holding_something_else_raises_persist_error() -> None:
    class Clash:
        def __init__(self) -> None:
            self._value = 'not a work'

        @property
        @persisted('_value')
        def value(self) -> int:
            return 1

    with pytest.raises(PersistError, match="'_value' holds a str"):
        _ = Clash().value


def test_class_without_instance_dict_raises_persist_error() -> None:
    class Slotted:
        __slots__ = ()

        @property
        @persisted('_value')
        def value(self) -> int:
            return 1

    with pytest.raises(PersistError, match='Slotted has none'):
        _ = Slotted().value


# -- cache_global ----------------------------------------------------------------


def test_cache_global_shares_the_value_across_instances() -> None:
    class Shared:
        calls = 0

        def __init__(self, n: int) -> None:
            self.n = n

        @property
        @persisted('_value', cache_global=True)
        def value(self) -> int:
            type(self).calls += 1
            return self.n

    assert Shared(1).value == 1
    assert Shared(2).value == 1
    assert Shared.calls == 1


def test_cache_global_is_not_shared_with_a_subclass() -> None:
    class Base:
        @property
        @persisted('_value', cache_global=True)
        def value(self) -> str:
            return type(self).__name__

    class Sub(Base):
        pass

    assert Base().value == 'Base'
    assert Sub().value == 'Sub'


def test_clear_global_forgets_only_the_shared_value() -> None:
    class Shared:
        calls = 0

        @property
        @persisted('_value', cache_global=True)
        def value(self) -> int:
            type(self).calls += 1
            return type(self).calls

    first = Shared()
    assert first.value == 1
    first._value.clear_global()
    assert first.value == 1
    assert Shared().value == 2


# -- files ------------------------------------------------------------------------


def test_value_is_written_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    _ = Counter(5, path).doubled
    with open(path, 'rb') as fh:
        assert pickle.load(fh) == 10


def test_file_value_wins_over_new_instance_inputs(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    assert Counter(5, path).doubled == 10
    later = Counter(50, path)
    assert later.doubled == 10
    assert later.calls == 0


def test_decorator_path_persists_to_that_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    class Decorated:
        @property
        @persisted('_value', path='value.dat')
        def value(self) -> list[int]:
            return [1, 2, 3]

    assert Decorated().value == [1, 2, 3]
    assert (tmp_path / 'value.dat').is_file()


def test_none_result_is_read_back_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / 'none.dat'
    assert Nothing(path).none is None
    later = Nothing(path)
    assert later.none is None
    assert later.calls == 0


def test_raising_method_leaves_no_file(tmp_path: Path) -> None:
    inst = Failing(tmp_path / 'value.dat')
    with pytest.raises(ValueError, match='no value today'):
        _ = inst.value
    assert list(tmp_path.iterdir()) == []


def test_missing_directory_without_mkdir_fails_before_computing(tmp_path: Path) -> None:
    inst = Counter(5, tmp_path / 'a' / 'b' / 'doubled.dat')
    with pytest.raises(PersistError, match='mkdir=True'):
        _ = inst.doubled
    assert inst.calls == 0


def test_mkdir_creates_missing_parent_directories(tmp_path: Path) -> None:
    path = tmp_path / 'a' / 'b' / 'doubled.dat'
    assert Counter(5, path, mkdir=True).doubled == 10
    assert path.is_file()


def test_unpicklable_value_raises_serialization_error_and_leaves_no_file(tmp_path: Path) -> None:
    inst = Unpicklable(tmp_path / 'value.dat')
    with pytest.raises(SerializationError, match=r'value\.dat'):
        _ = inst.value
    assert list(tmp_path.iterdir()) == []
    assert not inst._value.is_set()


def test_corrupt_file_raises_corrupt_error_naming_the_path(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    path.write_bytes(b'\x80\x05 this is not a pickle')
    with pytest.raises(StashCorruptError, match=str(path)) as info:
        _ = Counter(5, path).doubled
    assert info.value.__cause__ is not None


def test_empty_file_is_corrupt_by_default(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    path.touch()
    with pytest.raises(StashCorruptError):
        _ = Counter(5, path).doubled


def test_recover_empty_treats_an_empty_file_as_missing(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    path.touch()
    assert Counter(5, path, recover_empty=True).doubled == 10
    assert path.stat().st_size > 0


def test_serializer_option_chooses_the_file_format(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.json'
    _ = Counter(5, path, serializer=JsonSerializer()).doubled
    assert path.read_text() == '10'


def test_failed_replace_keeps_the_old_file_and_value(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / 'doubled.dat'
    inst = Counter(5, path)
    assert inst.doubled == 10

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(StashWriteError, match='No space left') as info:
        inst._doubled.set(99)
    monkeypatch.undo()
    assert isinstance(info.value, OSError)
    assert [p.name for p in tmp_path.iterdir()] == ['doubled.dat']
    with open(path, 'rb') as fh:
        assert pickle.load(fh) == 10
    assert inst.doubled == 10


def test_failed_first_write_leaves_no_file_and_caches_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = Counter(5, tmp_path / 'doubled.dat')

    def failing_replace(src: Any, dst: Any) -> None:
        raise OSError(5, 'Input/output error')

    monkeypatch.setattr(os, 'replace', failing_replace)
    with pytest.raises(StashWriteError, match=r'doubled\.dat'):
        _ = inst.doubled
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    assert not inst._doubled.is_set()
    assert inst.doubled == 10


# -- PersistedWork state ------------------------------------------------------------


def test_clear_forgets_the_value_and_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    inst = Counter(5, path)
    _ = inst.doubled
    inst._doubled.clear()
    assert not path.exists()
    assert not inst._doubled.is_set()
    inst.n = 6
    assert inst.doubled == 12
    assert inst.calls == 2


def test_set_replaces_the_value_and_the_file(tmp_path: Path) -> None:
    path = tmp_path / 'doubled.dat'
    inst = Counter(5, path)
    inst._doubled.set(None)
    assert inst.doubled is None
    assert inst.calls == 0
    assert Counter(7, path).doubled is None


def test_is_set_reports_an_in_memory_value() -> None:
    inst = Counter(5)
    _ = inst.doubled
    assert inst._doubled.is_set()
    assert not Counter(5, Path('unused.dat'))._doubled.is_set()


def test_initial_value_is_returned_without_running_the_method(tmp_path: Path) -> None:
    inst = Counter(5, tmp_path / 'doubled.dat', initial_value=3)
    assert inst._doubled.is_set()
    assert inst.doubled == 3
    assert inst.calls == 0
    assert list(tmp_path.iterdir()) == []


def test_work_called_directly_runs_its_worker(tmp_path: Path) -> None:
    owner = Counter(5)
    work = PersistedWork(tmp_path / 'w.dat', owner, worker=lambda x: x * 3)
    assert work(2) == 6
    assert work(100) == 6


def test_work_without_worker_raises_persist_error() -> None:
    with pytest.raises(PersistError, match='no worker'):
        PersistedWork('_w', Counter(5))()


def test_persist_error_is_a_stash_error() -> None:
    assert issubclass(PersistError, StashError)


# -- PersistableContainer ---------------------------------------------------------------


def test_pickling_keeps_non_transient_values() -> None:
    inst = Container(1)
    _ = inst.kept
    restored = pickle.loads(pickle.dumps(inst))
    assert restored.kept == 2
    assert restored.calls['kept'] == 1


def test_pickling_drops_transient_values() -> None:
    inst = Container(1)
    _ = inst.dropped
    restored = pickle.loads(pickle.dumps(inst))
    assert not restored._dropped.is_set()
    assert restored.dropped == 3
    assert restored.calls['dropped'] == 2


def test_unpickling_gives_each_work_the_new_instance_as_owner() -> None:
    inst = Container(1)
    _ = inst.kept
    _ = inst.dropped
    restored = pickle.loads(pickle.dumps(inst))
    assert restored._kept.owner is restored
    assert restored._dropped.owner is restored
    restored._kept.clear()
    assert inst._kept.is_set()


def test_deepcopy_of_a_container_follows_the_pickling_rules() -> None:
    inst = Container(1)
    _ = inst.kept
    _ = inst.dropped
    clone = copy.deepcopy(inst)
    assert clone._kept.is_set()
    assert not clone._dropped.is_set()


def test_pickling_a_plain_owner_keeps_works_attached() -> None:
    inst = Counter(5)
    _ = inst.doubled
    restored = pickle.loads(pickle.dumps(inst))
    assert restored._doubled.owner is restored
    restored._doubled.clear()
    assert restored.doubled == 10
    assert restored.calls == 2


def test_container_class_options_shape_the_pickle() -> None:
    inst = Options()
    state = inst.__getstate__()
    assert state['handle'] is None
    assert 'scratch' not in state
    assert inst.warm_calls == 1
    assert pickle.loads(pickle.dumps(inst)).warm == 'warmed'


def test_container_deallocate_deallocates_cached_values() -> None:
    owner = ResourceOwner()
    resource = owner.resource
    owner.deallocate()
    assert resource.freed == 1


def test_deallocated_work_cannot_be_used() -> None:
    owner = ResourceOwner()
    _ = owner.resource
    owner.deallocate()
    with pytest.raises(PersistError, match='deallocated'):
        _ = owner.resource


def test_clear_persistable_state_clears_every_work() -> None:
    inst = Container(1)
    _ = inst.kept
    _ = inst.dropped
    inst._clear_persistable_state()
    assert not inst._kept.is_set()
    assert not inst._dropped.is_set()


# -- Deallocatable ---------------------------------------------------------------------


def test_with_block_deallocates_on_exit_even_when_it_raises() -> None:
    resource = Resource()
    with pytest.raises(KeyError), resource as entered:
        assert entered is resource
        raise KeyError('boom')
    assert resource.freed == 1


def test_try_deallocate_ignores_other_objects() -> None:
    assert not Deallocatable._try_deallocate('text')
    assert not Deallocatable._try_deallocate([Resource()])


def test_recursive_deallocation_walks_nested_containers() -> None:
    inner, value = Resource(), Resource()
    nested: list[Any] = [inner, ({'key': value},)]
    nested.append(nested)
    assert Deallocatable._try_deallocate(nested, recursive=True)
    assert (inner.freed, value.freed) == (1, 1)


def test_deallocate_attribute_deallocates_and_removes_it() -> None:
    class Holder(Deallocatable):
        def __init__(self) -> None:
            self.resource = Resource()

    holder = Holder()
    resource = holder.resource
    assert holder._deallocate_attributes(('resource', 'absent')) == 1
    assert resource.freed == 1
    assert not hasattr(holder, 'resource')


def test_dealloc_helper_calls_a_factory_and_deallocates() -> None:
    with dealloc(Resource) as resource:
        assert resource.freed == 0
    assert resource.freed == 1


def test_dealloc_helper_does_not_call_a_callable_deallocatable() -> None:
    work = PersistedWork('_w', Counter(5), worker=Resource)
    with dealloc(work) as entered:
        assert entered is work
    assert work.owner is None


def test_work_deallocation_frees_a_deallocatable_value() -> None:
    owner = Counter(5)
    work = PersistedWork('_w', owner, worker=Resource)
    resource = work()
    work.deallocate()
    assert resource.freed == 1
    assert work.owner is None
