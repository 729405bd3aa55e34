"""The double's IAdmin, IConfig and ISession."""

from __future__ import annotations

import copy
import re

import omero
import omero.api
from omero.rtypes import unwrap

from ._base import Servant, implements
from .hql import Runner
from .model import PRIVATE, now, shallow

#: Every light-admin privilege (omero-model ome/model/enums/AdminPrivilege values, as
#: omero-server ome/security/basic/LightAdminPrivileges.getAllPrivileges lists them):
#: a full administrator holds them all, everyone else none.
ADMIN_PRIVILEGES = ("Chgrp", "Chown", "DeleteFile", "DeleteManagedRepo", "DeleteOwned",
                    "DeleteScriptRepo", "ModifyGroup", "ModifyGroupMembership", "ModifyUser",
                    "ReadSession", "Sudo", "WriteFile", "WriteManagedRepo", "WriteOwned",
                    "WriteScriptRepo")


def _privileges() -> list:
    """The AdminPrivilege enumeration's rows (ids in their own table's order)."""
    out = []
    for i, name in enumerate(ADMIN_PRIVILEGES, 1):
        p = omero.model.AdminPrivilegeI()
        p.setId(omero.rtypes.rlong(i))
        p.setValue(omero.rtypes.rstring(name))
        out.append(p)
    return out


@implements(omero.api.IAdmin)
class AdminService(Servant):
    def getEventContext(self, current):
        s = self.session
        g = self.db.get("ExperimenterGroup", s.group_id)
        ec = omero.sys.EventContext()
        ec.shareId = -1
        ec.sessionId = unwrap(s.model.id)
        ec.sessionUuid = s.uuid
        ec.userId = s.user_id
        ec.userName = unwrap(s.user.omeName)
        ec.sudoerId = None
        ec.sudoerName = None
        ec.groupId = s.group_id
        ec.groupName = unwrap(g.name)
        ec.isAdmin = s.is_admin()
        ec.adminPrivileges = list(ADMIN_PRIVILEGES) if s.is_admin() else []
        ec.eventId = -1
        ec.eventType = "User"
        ec.memberOfGroups = list(s.user._member_of)
        ec.leaderOfGroups = []
        ec.groupPermissions = g.details.permissions
        return ec

    def lookupGroup(self, name, current):
        g = self.db.group_by_name(name)
        if g is None:  # omero-server ome/logic/AdminImpl.java lookupGroup
            raise omero.ApiUsageException(message=f"No such group: {name}")
        return shallow(g)

    def lookupExperimenter(self, name, current):
        e = self.db.user_by_name(name)
        if e is None:
            raise omero.ApiUsageException(message=f"No such experimenter: {name}")
        return shallow(e)

    def getGroup(self, gid, current):
        return shallow(self.load("ExperimenterGroup", gid))

    def getExperimenter(self, eid, current):
        return shallow(self.load("Experimenter", eid))

    def _query(self, hql: str, params=None) -> list:
        """A query of AdminImpl's, run as IQuery would (users and groups are visible to
        everyone)."""
        return Runner(self.db, self.visible, self.session.user_id,
                      self.session.is_admin()).run(hql, params)

    # omero-server src/main/java/ome/logic/AdminImpl.java: these are its queries
    def lookupExperimenters(self, current):
        return self._query("select distinct e from Experimenter e "
                           "left outer join fetch e.groupExperimenterMap m "
                           "left outer join fetch m.parent g")

    def lookupGroups(self, current):
        return self._query("select distinct g from ExperimenterGroup g "
                           "left outer join fetch g.groupExperimenterMap m "
                           "left outer join fetch m.child u "
                           "left outer join fetch u.groupExperimenterMap m2 "
                           "left outer join fetch m2.parent")

    def containedExperimenters(self, gid, current):
        return self._query("select distinct e from Experimenter as e "
                           "join fetch e.groupExperimenterMap as map "
                           "join fetch map.parent g "
                           "where e.id in (select m.child from GroupExperimenterMap m "
                           "where m.parent.id = :id )", omero.sys.ParametersI().addId(gid))

    def containedGroups(self, eid, current):
        return self._query("select distinct g from ExperimenterGroup as g "
                           "join fetch g.groupExperimenterMap as map "
                           "join fetch map.child e "
                           "where g.id in (select m.parent from GroupExperimenterMap m "
                           "where m.child.id = :id )", omero.sys.ParametersI().addId(eid))

    def getCurrentAdminPrivileges(self, current):
        # AdminImpl.getCurrentAdminPrivileges (getAdminPrivileges: none outside system)
        return _privileges() if self.session.is_admin() else []

    def getAdminPrivileges(self, user, current):
        e = self.load("Experimenter", unwrap(user.id))
        return _privileges() if 0 in e._member_of else []

    def getMemberOfGroupIds(self, exp, current):
        return list(self.load("Experimenter", unwrap(exp.id))._member_of)

    def getSecurityRoles(self, current):
        # omero-common src/main/java/ome/system/Roles.java: rootId 0, systemGroupId 0,
        # userGroupId 1, guestId 1, guestGroupId 2 (omero.sys.Roles field order:
        # root, system group, user group, guest, guest group).
        return omero.sys.Roles(rootId=0, rootName="root", systemGroupId=0,
                               systemGroupName="system", userGroupId=1, userGroupName="user",
                               guestId=1, guestName="guest", guestGroupId=2,
                               guestGroupName="guest")

    def _admin(self) -> None:
        if not self.session.is_admin():
            raise omero.SecurityViolation(message="Admin privileges required")

    def createGroup(self, group, current):
        self._admin()
        perms = str(group.details.permissions) if group.details.permissions else PRIVATE
        return unwrap(self.db.add_group(unwrap(group.name), perms).id)

    def createExperimenterWithPassword(self, user, password, default, groups, current):
        self._admin()
        ids = [unwrap(default.id)] + [unwrap(g.id) for g in groups if unwrap(g.id) !=
                                      unwrap(default.id)] + [1]
        e = self.db.add_user(unwrap(user.omeName), unwrap(password), ids)
        # the names and e-mail the caller gave (omero-server ome/logic/AdminImpl.java
        # createExperimenterWithPassword saves the Experimenter it was sent)
        for attr in ("firstName", "middleName", "lastName", "email", "institution"):
            value = getattr(user, "_" + attr, None)
            if unwrap(value) is not None:
                setattr(e, "_" + attr, value)
        return unwrap(e.id)

    def addGroups(self, user, groups, current):
        self._admin()
        e = self.load("Experimenter", unwrap(user.id))
        for g in groups:
            self.db.add_membership(e, unwrap(g.id))


#: What the double says it is, as ``omero.version`` (a real server's reads like
#: "5.6.11-ice36"; OMERO.web's connector.py check_version compares its major.minor).
OMERO_VERSION = "5.6.0-double"


@implements(omero.api.IConfig)
class ConfigService(Servant):
    def _values(self) -> dict[str, str]:
        values = dict(self.server.config)
        values["omero.version"] = OMERO_VERSION
        if self.server.insecure_port:
            values["omero.router.insecure"] = (
                f"OMERO.Glacier2/router:tcp -p {self.server.insecure_port} -h @omero.host@")
        return values

    def getConfigValue(self, key, current):
        # omero-server src/main/java/ome/logic/ConfigImpl.java getConfigValue: an unset
        # key reads as ""
        return self._values().get(key, "")

    def getConfigValues(self, regex, current):
        # ConfigImpl.getConfigValues: the keys the pattern finds (re.search, as find())
        pattern = re.compile(regex or "$^")
        return {k: v for k, v in self._values().items() if pattern.search(k)}

    def getVersion(self, current):
        # ConfigImpl.getVersion: omero.version matched by IConfig.VERSION_REGEX (omero-common
        # src/main/java/ome/api/IConfig.java), group 1
        return re.match(r"^.*?[-]?(\d+[.]\d+([.]\d+)?)[-]?.*?$", OMERO_VERSION).group(1)

    def getClientConfigValues(self, current):
        return {}

    def getClientConfigDefaults(self, current):
        return {}

    def getDatabaseUuid(self, current):
        return self.server.db_uuid

    def getServerTime(self, current):
        return now()


@implements(omero.api.ISession)
class SessionService(Servant):
    def getSession(self, uuid_, current):
        s = self.server.sessions.get(uuid_)
        if s is None or not s.alive:
            raise omero.RemovedSessionException(message=f"No session with uuid: {uuid_}")
        return copy.copy(s.model)

    def getReferenceCount(self, uuid_, current):
        s = self.server.sessions.get(uuid_)
        return 0 if s is None or not s.alive else s.refs

    def closeSession(self, sess, current):
        s = self.server.sessions.get(unwrap(sess.uuid))
        if s is None or not s.alive:
            return -2
        s.refs = max(0, s.refs - 1)
        if s.refs < 1:
            self.server.end_session(s)
        return s.refs
