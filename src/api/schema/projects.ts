import { archiveProjectAndStop, removeMemberAndStop } from '../../generations/generations.js';
import {
  addProjectMember,
  createProject,
  email,
  listProjects,
  projectDescription,
  projectLoaders,
  projectName,
  updateProject,
} from '../../projects/projects.js';
import type { MemberRow, MemberWithUser, ProjectRole, ProjectRow } from '../../projects/store.js';
import { builder } from '../builder.js';
import { idFor, idOrNullFor } from './ids.js';
import { keysetConnection } from './paging.js';
import { UserRef } from './users.js';

export const ProjectTargetEnum = builder.enumType('ProjectTarget', {
  values: {
    FLUTTER: { description: 'A Flutter app (pubspec + lib/), built with flutter pub get, analyze and build web.' },
    WEB: { description: 'A Vite + React + TypeScript app, built with npm install, tsc and vite build.' },
  } as const,
});

export const ProjectRoleEnum = builder.enumType('ProjectRole', {
  values: {
    OWNER: { value: 'owner', description: 'Everything, including members and budget.' },
    EDITOR: { value: 'editor', description: 'Edits the project and starts or cancels generations.' },
    VIEWER: { value: 'viewer', description: 'Reads the project and its generations.' },
  } as const,
});

export const ProjectRef = builder.loadableNodeRef<ProjectRow, string, string>('Project', {
  id: { resolve: (project) => project.id },
  // Unknown or invisible ids load as null: existence is never revealed.
  load: (ids, ctx) => projectLoaders.projects(ctx.db, ids),
  sort: (project) => project.id,
});

const MemberRef = builder.objectRef<MemberRow & Partial<Pick<MemberWithUser, 'user'>>>('ProjectMember').implement({
  fields: (t) => ({
    role: t.field({ type: ProjectRoleEnum, resolve: (member) => member.role }),
    // Read with the member where the list read them together; a member just added loads it.
    user: t.field({ type: UserRef, resolve: (member) => member.user ?? member.userId }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
  }),
});

ProjectRef.implement({
  fields: (t) => ({
    name: t.exposeString('name'),
    description: t.exposeString('description', { nullable: true }),
    target: t.field({ type: ProjectTargetEnum, resolve: (project) => project.target }),
    viewerRole: t.field({
      type: ProjectRoleEnum,
      description: "The signed-in user's role in this project.",
      resolve: (project) => project.viewerRole ?? 'viewer',
    }),
    createdAt: t.expose('createdAt', { type: 'DateTime' }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
    archivedAt: t.expose('archivedAt', { type: 'DateTime', nullable: true }),
    members: t.loadableList({
      type: MemberRef,
      load: async (projectIds: string[], ctx) => {
        const rows = await projectLoaders.members(ctx.db, projectIds);
        return projectIds.map((id) => rows.filter((row) => row.projectId === id));
      },
      resolve: (project) => project.id,
    }),
  }),
});

const CreateProjectInput = builder.inputType('CreateProjectInput', {
  fields: (t) => ({
    name: t.string({ required: true, validate: projectName }),
    description: t.string({ validate: projectDescription.nullish() }),
    target: t.field({ type: ProjectTargetEnum, required: true }),
  }),
});

const UpdateProjectInput = builder.inputType('UpdateProjectInput', {
  fields: (t) => ({
    id: t.globalID({ required: true }).validate(idFor('Project')),
    name: t.string({ validate: projectName.nullish() }),
    description: t.string({ validate: projectDescription.nullish() }),
  }),
});

const AddProjectMemberInput = builder.inputType('AddProjectMemberInput', {
  description: 'Adds a user by email; adding an existing member again may change its role.',
  fields: (t) => ({
    projectId: t.globalID({ required: true }).validate(idFor('Project')),
    email: t.string({ required: true, validate: email }),
    role: t.field({ type: ProjectRoleEnum, required: true }),
  }),
});

const RemoveProjectMemberInput = builder.inputType('RemoveProjectMemberInput', {
  fields: (t) => ({
    projectId: t.globalID({ required: true }).validate(idFor('Project')),
    userId: t.globalID({ required: true, description: 'The global id of the User to remove.' }).validate(idFor('User')),
  }),
});

builder.queryFields((t) => ({
  project: t.field({
    type: ProjectRef,
    nullable: true,
    authScopes: { signedIn: true },
    description: 'A project the viewer is a member of; null for any other id.',
    args: { id: t.arg.globalID({ required: true }).validate(idOrNullFor('Project')) },
    resolve: (_root, args) => args.id,
  }),
  projects: t.connection({
    type: ProjectRef,
    authScopes: { signedIn: true },
    description: "The viewer's projects, newest first (at most 100 a page).",
    resolve: (_root, args, ctx) => keysetConnection(args, (page) => listProjects(ctx.db, page)),
  }),
}));

builder.mutationFields((t) => ({
  createProject: t.field({
    type: ProjectRef,
    errors: {},
    args: { input: t.arg({ type: CreateProjectInput, required: true }) },
    resolve: (_root, { input }, ctx) => createProject(ctx.db, input),
  }),
  updateProject: t.field({
    type: ProjectRef,
    errors: {},
    args: { input: t.arg({ type: UpdateProjectInput, required: true }) },
    resolve: (_root, { input }, ctx) => updateProject(ctx.db, input),
  }),
  archiveProject: t.field({
    type: ProjectRef,
    errors: {},
    description: 'Keeps the project as it is: its queued generations end and its running ones are stopped (CANCELLED), and it takes no new ones.',
    args: { id: t.arg.globalID({ required: true }).validate(idFor('Project')) },
    resolve: (_root, args, ctx) => archiveProjectAndStop(ctx.db, ctx.useCases.generations, args.id),
  }),
  addProjectMember: t.field({
    type: MemberRef,
    errors: {},
    args: { input: t.arg({ type: AddProjectMemberInput, required: true }) },
    resolve: (_root, { input }, ctx) => addProjectMember(ctx.db, input, { rateLimit: (userId) => ctx.useCases.rateLimits.memberAdd(userId, ctx.clientIp) }),
  }),
  removeProjectMember: t.field({
    type: ProjectRef,
    errors: {},
    description: "Takes a member's access away (not the project creator's): their queued generations in the project end and their running ones are stopped (CANCELLED).",
    args: { input: t.arg({ type: RemoveProjectMemberInput, required: true }) },
    resolve: (_root, { input }, ctx) => removeMemberAndStop(ctx.db, ctx.useCases.generations, input),
  }),
}));

export type { ProjectRole };
