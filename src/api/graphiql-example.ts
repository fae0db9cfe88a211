// What GraphiQL opens on: the first three things a newcomer does. Run SignUp, put
// its accessToken into the Headers tab as {"Authorization": "Bearer …"}, then the rest.
export const graphiqlExample = `# Welcome to Kiln.
# 1. Run SignUp (or SignIn), copy accessToken into Headers:
#    { "Authorization": "Bearer <accessToken>" }
# 2. Run CreateProject, then Projects.

mutation SignUp {
  signUp(input: { email: "you@example.com", password: "correct horse battery" }) {
    __typename
    ... on AuthSession { accessToken refreshToken expiresAt user { id email } }
    ... on Error { message }
  }
}

mutation SignIn {
  signIn(input: { email: "you@example.com", password: "correct horse battery" }) {
    __typename
    ... on AuthSession { accessToken refreshToken expiresAt }
    ... on Error { message }
  }
}

mutation CreateProject {
  createProject(input: { name: "My first app", target: WEB }) {
    __typename
    ... on Project { id name target viewerRole }
    ... on Error { message }
  }
}

query Projects {
  projects(first: 20) {
    totalCount
    edges { node { id name target viewerRole members { role user { email } } } }
  }
}
`;
