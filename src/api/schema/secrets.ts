import { projectLoaders, secretValue, setProjectSecret } from '../../projects/projects.js';
import { builder } from '../builder.js';
import { idFor } from './ids.js';
import { ProjectRef } from './projects.js';

const SecretNameEnum = builder.enumType('ProjectSecretName', {
  values: {
    GEMINI_API_KEY: { description: "The project's own Gemini key, used instead of the server's." },
    OPENAI_API_KEY: { description: "The project's own key for the OpenAI-compatible provider." },
  } as const,
});

const SecretRef = builder.objectRef<{ name: 'GEMINI_API_KEY' | 'OPENAI_API_KEY'; updatedAt: Date }>('ProjectSecret').implement({
  description: 'A stored secret: its name and when it changed. The value is write-only.',
  fields: (t) => ({
    name: t.field({ type: SecretNameEnum, resolve: (secret) => secret.name }),
    updatedAt: t.expose('updatedAt', { type: 'DateTime' }),
  }),
});

builder.objectField(ProjectRef, 'secrets', (t) =>
  t.loadableList({
    type: SecretRef,
    load: async (projectIds: string[], ctx) => {
      const rows = await projectLoaders.secrets(ctx.db, projectIds);
      return projectIds.map((id) => rows.filter((row) => row.projectId === id));
    },
    resolve: (project) => project.id,
  }),
);

const SetProjectSecretInput = builder.inputType('SetProjectSecretInput', {
  description: 'value null deletes the secret.',
  fields: (t) => ({
    projectId: t.globalID({ required: true }).validate(idFor('Project')),
    name: t.field({ type: SecretNameEnum, required: true }),
    value: t.string({ validate: secretValue.optional() }),
  }),
});

builder.mutationField('setProjectSecret', (t) =>
  t.field({
    type: ProjectRef,
    errors: {},
    description: 'Owners store a project secret, encrypted at rest; it is never returned or logged.',
    args: { input: t.arg({ type: SetProjectSecretInput, required: true }) },
    resolve: (_root, { input }, ctx) =>
      setProjectSecret(ctx.db, ctx.useCases.secretBox, { projectId: input.projectId, name: input.name, value: input.value }),
  }),
);

