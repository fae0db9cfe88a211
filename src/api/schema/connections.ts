import { builder } from '../builder.js';

builder.globalConnectionField('totalCount', (t) =>
  t.int({ description: 'How many items the whole list has, across pages.', resolve: (connection) => connection.totalCount }),
);
