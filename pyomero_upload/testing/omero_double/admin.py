"""The double's IAdmin, IConfig and ISession."""

from __future__ import annotations

import copy

import omero
import omero.api
from omero.rtypes import unwrap

from ._base import Servant, implements
from .model import PRIVATE, now, shallow


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
        ec.adminPrivileges = []
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
        return unwrap(self.db.add_user(unwrap(user.omeName), unwrap(password), ids).id)

    def addGroups(self, user, groups, current):
        self._admin()
        member = self.load("Experimenter", unwrap(user.id))._member_of
        member += [unwrap(g.id) for g in groups if unwrap(g.id) not in member]


@implements(omero.api.IConfig)
class ConfigService(Servant):
    def getConfigValue(self, key, current):
        if key == "omero.router.insecure" and self.server.insecure_port:
            return (f"OMERO.Glacier2/router:tcp -p {self.server.insecure_port} "
                    "-h @omero.host@")
        return self.server.config.get(key, "")

    def getVersion(self, current):
        return "5.6.0-double"

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
