# `az iot dps` as Microsoft's quickstarts and tutorials write it, for an Azure DPS.
# tests/cli/test_az_transcript.py runs it with the prefix changed (`az iot dps` -> `dpsctl`,
# `az iot device registration create` -> `dpsctl device registration create`) under `set -euo pipefail`,
# against a fresh store, with DPSCTL_OUTPUT=json (az's default output), then checks the store it leaves.
# The certificate files are made with `dpsctl cert` where the tutorials use openssl.
# Needs: WORK (a scratch folder), HUB1_CS (a hub owner connection string).

DPS=contoso-dps
RG=contoso-rg

# --- Link IoT hubs, with allocation weights (tutorial: how to use allocation policies)
az iot dps linked-hub create --dps-name $DPS --resource-group $RG --connection-string "$HUB1_CS" --allocation-weight 2 --apply-allocation-policy true
az iot dps linked-hub create --dps-name $DPS -g $RG --hub-name contoso-hub-2 --location westus --allocation-weight 1
az iot dps linked-hub list --dps-name $DPS -g $RG --query "[].name" -o tsv
test "$(az iot dps linked-hub show --dps-name $DPS -g $RG --linked-hub contoso-hub-1.azure-devices.net --query allocationWeight -o tsv)" = 2
az iot dps linked-hub update --dps-name $DPS -g $RG --linked-hub contoso-hub-2.azure-devices.net --allocation-weight 3 --apply-allocation-policy true

# --- The service connection string, for --login (quickstart: manage enrollments with the Azure CLI)
DPS_CS=$(az iot dps connection-string show -n $DPS -g $RG --query connectionString -o tsv)

# --- Symmetric-key individual enrollment (quickstart: provision a simulated symmetric key device)
az iot dps enrollment create -g $RG --dps-name $DPS --enrollment-id sim-device-001 --attestation-type symmetrickey
az iot dps enrollment create -g $RG --dps-name $DPS --enrollment-id sim-device-002 --attestation-type symmetricKey --device-id thermostat-002 --provisioning-status enabled --initial-twin-tags "{'location':{'region':'US'}}" --initial-twin-properties "{'telemetryInterval':30}" --edge-enabled false --reprovision-policy reprovisionandresetdata --allocation-policy hashed --iot-hubs contoso-hub-1.azure-devices.net contoso-hub-2.azure-devices.net
KEY1=$(az iot dps enrollment show -g $RG --dps-name $DPS --enrollment-id sim-device-001 --show-keys --query attestation.symmetricKey.primaryKey -o tsv)
az iot dps enrollment list -g $RG --dps-name $DPS --query "[].registrationId" -o tsv
az iot device registration create -g $RG -n $DPS --registration-id sim-device-001 --symmetric-key "$KEY1"
test "$(az iot dps enrollment registration show -g $RG --dps-name $DPS --eid sim-device-001 --query status -o tsv)" = assigned
ETAG=$(az iot dps enrollment show --dps-name $DPS -g $RG --eid sim-device-002 --query etag -o tsv)
az iot dps enrollment update --dps-name $DPS -g $RG --eid sim-device-002 --etag "$ETAG" --provisioning-status disabled --initial-twin-tags "{'location':{'region':'EU'}}"
test "$(az iot dps enrollment show --dps-name $DPS -g $RG --eid sim-device-002 --query provisioningStatus -o tsv)" = disabled
az iot dps enrollment update --dps-name $DPS -g $RG --eid sim-device-002 --ps enabled --ee true -e "*"
az iot device registration create -n $DPS -g $RG --rid sim-device-002
test "$(az iot dps enrollment registration show --dps-name $DPS -g $RG --eid sim-device-002 --query deviceId -o tsv)" = thermostat-002

# --- TPM individual enrollment (quickstart: provision a simulated TPM device)
dpsctl tpm create "$WORK/tpm-device-001.tpm"
EK=$(dpsctl tpm show "$WORK/tpm-device-001.tpm" --query endorsementKey -o tsv)
az iot dps enrollment create --dps-name $DPS -g $RG --enrollment-id tpm-device-001 --attestation-type tpm --endorsement-key "$EK" --device-id tpm-001

# --- Symmetric-key enrollment group and compute-device-key (how to: provision devices with symmetric key groups)
az iot dps enrollment-group create -g $RG --dps-name $DPS --enrollment-id contoso-sensors --iot-hubs contoso-hub-1.azure-devices.net contoso-hub-2.azure-devices.net --allocation-policy hashed --reprovision-policy reprovisionandmigratedata
GROUP_KEY=$(az iot dps enrollment-group show -g $RG --dps-name $DPS --enrollment-id contoso-sensors --show-keys --query attestation.symmetricKey.primaryKey -o tsv)
DEVICE_KEY=$(az iot dps enrollment-group compute-device-key -g $RG --dps-name $DPS --enrollment-id contoso-sensors --registration-id sensor-001 -o tsv)
OFFLINE_KEY=$(az iot dps enrollment-group compute-device-key --symmetric-key "$GROUP_KEY" --registration-id sensor-001 -o tsv)
test "$DEVICE_KEY" = "$OFFLINE_KEY"
LEGACY_KEY=$(az iot dps compute-device-key --key "$GROUP_KEY" --registration-id sensor-002 -o tsv)
az iot device registration create -n $DPS -g $RG --registration-id sensor-001 --symmetric-key "$DEVICE_KEY"
az iot device registration create -n $DPS -g $RG --rid sensor-002 --key "$LEGACY_KEY"
az iot device registration create -n $DPS -g $RG --rid sensor-003 --enrollment-group-id contoso-sensors --symmetric-key "$GROUP_KEY" --compute-key
az iot device registration create -n $DPS -g $RG --rid sensor-004 --gid contoso-sensors
test "$(az iot dps enrollment-group registration list -g $RG --dps-name $DPS --enrollment-id contoso-sensors --query 'length(@)' -o tsv)" = 4
az iot dps enrollment-group registration show -g $RG --dps-name $DPS --rid sensor-001 --query assignedHub -o tsv
az iot dps enrollment-group registration delete -g $RG --dps-name $DPS --registration-id sensor-004
az iot dps registration list --dps-name $DPS -g $RG --enrollment-id contoso-sensors --top 2 --query "[].registrationId" -o tsv
test "$(az iot dps registration show --dps-name $DPS -g $RG --registration-id sensor-002 --query deviceId -o tsv)" = sensor-002
ETAG=$(az iot dps enrollment-group show --dps-name $DPS -g $RG --enrollment-id contoso-sensors --query etag -o tsv)
az iot dps enrollment-group update --dps-name $DPS -g $RG --enrollment-id contoso-sensors --etag "$ETAG" --initial-twin-properties "{'firmware':'1.2.0'}" --edge-enabled false
az iot dps enrollment-group list --dps-name $DPS -g $RG --query "[].enrollmentGroupId" -o tsv

# --- X.509 enrollment group with a verified CA certificate (tutorial: proof of possession)
dpsctl cert create-root contoso-root --out "$WORK"
az iot dps certificate create --dps-name $DPS --resource-group $RG --certificate-name contoso-root-ca --path "$WORK/contoso-root.cert.pem"
az iot dps certificate list --dps-name $DPS -g $RG --query "value[].name" -o tsv
ETAG=$(az iot dps certificate show --dps-name $DPS -g $RG --name contoso-root-ca --query etag -o tsv)
CODE=$(az iot dps certificate generate-verification-code --dps-name $DPS -g $RG --name contoso-root-ca --etag "$ETAG" --query properties.verificationCode -o tsv)
dpsctl cert create-verification "$CODE" --ca "$WORK/contoso-root.cert.pem" --ca-key "$WORK/contoso-root.key.pem" --out "$WORK"
ETAG=$(az iot dps certificate show --dps-name $DPS -g $RG --name contoso-root-ca --query etag -o tsv)
az iot dps certificate verify --dps-name $DPS -g $RG --name contoso-root-ca --path "$WORK/verification.cert.pem" --etag "$ETAG"
test "$(az iot dps certificate show --dps-name $DPS -g $RG --name contoso-root-ca --query properties.isVerified -o tsv)" = true
az iot dps enrollment-group create --dps-name $DPS -g $RG --enrollment-id contoso-x509 --ca-name contoso-root-ca --allocation-policy static --iot-hubs contoso-hub-2.azure-devices.net
dpsctl cert create-device x509-device-001 --ca "$WORK/contoso-root.cert.pem" --ca-key "$WORK/contoso-root.key.pem" --out "$WORK"
az iot device registration create -n $DPS -g $RG --registration-id x509-device-001 --certificate-file-path "$WORK/x509-device-001.cert.pem" --key-file-path "$WORK/x509-device-001.key.pem"
test "$(az iot dps enrollment-group registration show -g $RG --dps-name $DPS --rid x509-device-001 --query assignedHub -o tsv)" = contoso-hub-2.azure-devices.net

# --- X.509 individual enrollment (quickstart: provision an X.509 certificate device)
dpsctl cert create-device x509-device-002 --out "$WORK"
az iot dps enrollment create --dps-name $DPS -g $RG --enrollment-id x509-device-002 --attestation-type x509 --certificate-path "$WORK/x509-device-002.cert.pem" --provisioning-status enabled
az iot device registration create -n $DPS -g $RG --rid x509-device-002 --cp "$WORK/x509-device-002.cert.pem" --kp "$WORK/x509-device-002.key.pem"

# --- Clean up part of it (az prints nothing for deletes)
test -z "$(az iot dps enrollment registration delete --dps-name $DPS -g $RG --enrollment-id sim-device-001)"
test -z "$(az iot dps enrollment delete --dps-name $DPS -g $RG --enrollment-id sim-device-001)"
az iot dps enrollment delete --dps-name $DPS -g $RG --enrollment-id tpm-device-001 --etag "*"
az iot dps linked-hub create --dps-name $DPS -g $RG --hub-name contoso-hub-3 --apply-allocation-policy false
az iot dps linked-hub delete --dps-name $DPS -g $RG --linked-hub contoso-hub-3.azure-devices.net

# --- The same commands, authenticated with the DPS connection string instead of a name
az iot dps enrollment list --login "$DPS_CS" --query "length(@)" -o tsv
az iot dps enrollment-group show --login "$DPS_CS" --auth-type key --enrollment-id contoso-x509 --query attestation.x509.caReferences.primary -o tsv
