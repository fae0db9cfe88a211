import { projectLoaders } from '../../projects/projects.js';
import type { UserRow } from '../../projects/store.js';
import { builder } from '../builder.js';

export const UserRef = builder.loadableNodeRef<UserRow, string, string>('User', {
  id: { resolve: (user) => user.id },
  load: async (ids, ctx) => {
    const rows = await projectLoaders.users(ctx.db, ids);
    return ids.map((id) => rows.find((row) => row.id === id) ?? new Error('User not found'));
  },
});

UserRef.implement({
  fields: (t) => ({
    email: t.exposeString('email'),
  }),
});
