// The user-assigned identity keyward uses to read its secrets (and the app to pull images).
// User-assigned, so its grants exist before the app does and survive app re-creation.
param location string
param name string
param tags object

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
