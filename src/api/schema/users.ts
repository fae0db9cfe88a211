import { projectLoaders } from '../../projects/projects.js';
import type { UserRow } from '../../projects/store.js';
import { builder } from '../builder.js';

export const UserRef = builder.loadableNodeRef<Pick<UserRow, 'id' | 'email'>, string, string>('User', {
  id: { resolve: (user) => user.id },
  load: (ids, ctx) => projectLoaders.users(ctx.db, ids),
  sort: (user) => user.id,
});

UserRef.implement({
  fields: (t) => ({
    email: t.exposeString('email'),
  }),
});
