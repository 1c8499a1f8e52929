from hypothesis import given
from hypothesis import strategies as st

from kawa.portal.permissions import PERMISSIONS, Action, Role
from kawa.projects.core import DEFAULT_PROJECT, Project, User, can, can_read_shared, kafka_topic, split

roles = st.sampled_from(list(Role))
actions = st.sampled_from(list(Action))


@given(roles, actions)
def test_member_can_exactly_what_the_map_allows(role: Role, action: Action) -> None:
    p = Project("team-a", members={"ann": role})
    assert can(User("ann"), p, action) == (action in PERMISSIONS[role])


@given(roles, actions)
def test_no_access_to_a_project_one_is_not_member_of(role: Role, action: Action) -> None:
    a = Project("team-a", members={"ann": role})
    b = Project("team-b", members={"bob": role})
    assert not can(User("ann", global_role=role), b, action)
    assert not can_read_shared(User("ann"), b, "team-b/x")
    assert can(User("ann"), a, Action.VIEW)


@given(roles, actions)
def test_global_role_acts_in_default(role: Role, action: Action) -> None:
    d = Project(DEFAULT_PROJECT)
    assert can(User("ann", global_role=role), d, action) == (action in PERMISSIONS[role])


def test_shared_resource_readable_and_admin_everywhere() -> None:
    b = Project("team-b", shared=frozenset({"team-b/images"}))
    assert can_read_shared(User("ann"), b, "team-b/images")
    assert can(User("root", platform_admin=True), b, Action.USERS_MANAGE)


def test_names_map_to_backends() -> None:
    assert split("team-a/raw") == ("team-a", "raw")
    assert split("raw") == (DEFAULT_PROJECT, "raw")
    assert kafka_topic("team-a", "raw") == "team-a.raw"
    assert kafka_topic(DEFAULT_PROJECT, "raw") == "raw"
